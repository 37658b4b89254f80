"""Writers to other formats (ONNX)."""
from .onnx import EMITTERS, GraphBuilder, build_onnx, onnx_forward, parity, save_onnx

__all__ = ["EMITTERS", "GraphBuilder", "build_onnx", "onnx_forward", "parity", "save_onnx"]
