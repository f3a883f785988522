"""Typed I/O contracts: one per served model, shared by exporter, config writer and gateway."""

from samo.contracts.emotion import EmotionContract, EmotionModelCard
from samo.contracts.tensors import DataType, ModelContract, TensorSpec

__all__ = ["DataType", "EmotionContract", "EmotionModelCard", "ModelContract", "TensorSpec"]
