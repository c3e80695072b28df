"""What deploys a model: tiled inference on users' images (:mod:`.tiling`), export to ONNX and torch.export
(:mod:`.exporters`)."""
