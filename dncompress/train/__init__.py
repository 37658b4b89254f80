"""Training: a training-mode graph beside the inference layers, YOLOv3 loss, SGD, the loop."""
