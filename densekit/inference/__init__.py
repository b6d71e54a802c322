"""Inference: models from configs and checkpoints, images and volumes, ONNX export, attention maps."""
