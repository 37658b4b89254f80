"""dncompress: compress Darknet/YOLO detectors (prune, quantize, export) without leaving Darknet."""
__version__ = "0.1.0"
