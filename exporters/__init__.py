"""Exporters: Hugging Face checkpoints to ONNX, validated, and written into a Triton model repository."""
