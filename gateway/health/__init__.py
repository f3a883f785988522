"""Model health: a real inference on every installed model, reloads of models that fail, and what
readiness, /health/models and grpc.health.v1 report."""
