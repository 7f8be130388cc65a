"""FLARE21 abdominal-organ segmentation: nnU-Net v1 weights, with an inference path of its own."""
import time as _time

# Taken before any heavy import, so that start-up cost (imports, CUDA context) is measured.
PROCESS_START = _time.perf_counter()
__version__ = "0.1.0"
