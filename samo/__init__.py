"""Shared core of SAMO serving: per-model I/O contracts, settings, Triton tooling and the CLI."""

__version__ = "0.1.0"
