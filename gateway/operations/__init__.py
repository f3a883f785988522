"""The operation layer: one transport-neutral entry per operation (`entries.py`), what each costs
(`costs.py`), and the operations by name and URL (`registry.py`). Transports sit above it and only
convert formats; features (emotions, transcription, summarization, journal) sit below it."""

from gateway.operations.entries import AudioUpload, Operations, OperationStream, Upload, uploaded

__all__ = ["AudioUpload", "OperationStream", "Operations", "Upload", "uploaded"]
