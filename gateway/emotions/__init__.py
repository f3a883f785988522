"""Emotion detection: model assets, the service (tokenize -> Triton -> thresholds) and its results."""
