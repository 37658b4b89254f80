"""Quantization: quantizers, calibration, bias correction, [quantize_convolutional] and the packed format."""
