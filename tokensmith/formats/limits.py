"""Size caps that keep memory bounded on hostile files. One place, so tests and docs agree."""

from __future__ import annotations

MiB = 1024 * 1024

# Formats we must read whole (pickles, PNG) are refused above this size.
MAX_FILE_BYTES = 512 * MiB
# A safetensors JSON header larger than this is not an embedding file (real ones are < 1 KiB;
# LoRA bundles with thousands of keys stay well under 1 MiB).
MAX_SAFETENSORS_HEADER = 8 * MiB
# One embedding tensor: 75 vectors x 4096 fp32 is 1.2 MiB, so this is generous.
MAX_TENSOR_BYTES = 64 * MiB
# Decompressed zlib data (PNG zTXt/iTXt chunks, drawn data) and decoded base64 / JSON text. The
# largest real payload (75 x 4096 numbers as JSON text) is about 7 MiB.
MAX_DECOMPRESSED_BYTES = 32 * MiB
MAX_JSON_BYTES = 32 * MiB
# Numbers in one PNG embedding JSON document, all tensors together (checked on the text before
# parsing). The largest real one, 75 x 4096, is 307200; 1M Python floats stay near 40 MB.
MAX_JSON_NUMBERS = 1024 * 1024
# Pixels of a PNG we decode to look for drawn data (a 4096 x 4096 image).
MAX_DRAWN_PIXELS = 4096 * 4096
