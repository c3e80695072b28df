"""What deploys a model: tiled inference on large images, export to ONNX and torch.export."""
