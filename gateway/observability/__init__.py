"""Knowing what happened: request IDs, logs, traces and metrics for the gateway's HTTP and gRPC fronts.

Nothing here records entry text, audio or keys: only request IDs, routes, model names, sizes and times.
"""
