"""recsys-engine's dashboard: a Streamlit app over a running server.

It talks to the server only through :mod:`recsys_client` (plus the Prometheus metrics endpoint
and, read-only, the trainer's artifacts and data for catalog counts and user histories, which
the gRPC API does not expose). Start it with ``recsys-dashboard`` (:mod:`.launcher`).
"""
