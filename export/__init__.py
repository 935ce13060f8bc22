"""Exporting HydraViT to ONNX, ExecuTorch, Core ML and TFLite, with validation (``hydravit_edge.export``)."""
