"""Post-training quantization: calibration, [quantize_convolutional] networks, packed files, QDQ ONNX."""
