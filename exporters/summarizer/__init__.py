"""`samo export summarizer`: T5, BART and Pegasus checkpoints as Triton generation models."""
