"""Whisper exporters: CTranslate2 Whisper folders into Triton, and back to Hugging Face checkpoints."""
