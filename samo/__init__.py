"""Shared core of SAMO serving: per-model I/O contracts, text encoding, the generation engine, settings
and Triton tooling. It imports nothing from the gateway, the exporters or the entry points."""

__version__ = "0.1.0"
