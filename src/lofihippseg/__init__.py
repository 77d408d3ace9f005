"""LoFiHippSeg: dual-view hippocampus segmentation for low-field brain MRI."""

__version__ = "0.1.0"
