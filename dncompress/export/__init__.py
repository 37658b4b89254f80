"""Writers to other formats (ONNX)."""
