"""``python -m devkit.fuzzing run|repro ...`` (see the package docstring)."""

import sys

from devkit.fuzzing.runner import main

sys.exit(main())
