"""Summarization: the extractive default (MiniLM sentence embeddings served by Triton, centrality + MMR)."""
