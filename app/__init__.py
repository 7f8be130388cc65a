"""FLARE21 abdominal-organ segmentation: nnU-Net v1 weights, with an inference path of its own."""

__version__ = "0.1.0"
