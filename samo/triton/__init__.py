"""Triton tooling: config.pbtxt generation and the local tritonserver from the nvidia-pytriton wheel."""
