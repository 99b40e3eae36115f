"""recsys-engine gRPC serving."""
