"""The gateway: tokenization and post-processing around Triton, behind thin HTTP (and gRPC) fronts."""
