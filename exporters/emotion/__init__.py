"""Emotion classifier export: BERT-family checkpoints, or the embedded zero-shot MiniLM default."""
