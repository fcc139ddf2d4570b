"""TokenSmith core: embedding files, merge maths, schedules and training maths.

Pure Python + torch + safetensors + numpy + pillow: nothing here imports ComfyUI, so the core
can be used and tested on its own (``python -m tokensmith``).
"""

__version__ = "0.1.0"
