# TokenSmith: `make demo` trains an embedding end to end; `make test` runs every test.
# Both provision what they need first (.venv, torch, the ComfyUI host): see scripts/provision.sh.
PY := .venv/bin/python
HOST = $$(cat .venv/comfyui_path)

.PHONY: provision test test-hosts test-core lint demo serve bench fuzz mutants clean

provision:
	@bash scripts/provision.sh

lint: provision
	$(PY) -m ruff check .

test: provision
	@bash scripts/install_browser.sh
	$(PY) -m ruff check .
	COMFYUI_PATH=$(HOST) $(PY) -m pytest tests --junitxml=test-artifacts/junit.xml

# The in-process, server and browser tests on every ComfyUI host found (scripts/test_hosts.py)
test-hosts:
	@bash scripts/install_browser.sh
	python3 scripts/test_hosts.py $(ARGS)

test-core: provision
	$(PY) -m pytest tests/core

demo: provision
	COMFYUI_PATH=$(HOST) $(PY) -m devkit.demo $(ARGS)

serve: provision
	COMFYUI_PATH=$(HOST) $(PY) -m devkit.serve $(ARGS)

bench: provision
	COMFYUI_PATH=$(HOST) $(PY) -m bench.run $(ARGS)

fuzz: provision
	COMFYUI_PATH=$(HOST) TOKENSMITH_FUZZ_EXAMPLES=$${TOKENSMITH_FUZZ_EXAMPLES:-100000} $(PY) -m pytest tests/fuzz -q

# Mutation testing (not part of `make test`; long: see bench/mutants.py). A subset:
# make mutants ARGS="tokensmith/names.py server_routes.py nodes/use.py"
mutants: provision
	$(PY) -m pip install -q -r requirements-mutants.txt
	COMFYUI_PATH=$(HOST) OMP_NUM_THREADS=1 $(PY) -m bench.mutants $(ARGS)

clean:
	rm -rf .pytest_cache .ruff_cache .hypothesis .demo test-artifacts
