"""recsys-engine trainer: the `recsys-train` CLI, self-tuning, evaluation and synthetic data.

The data model, loaders, models, artifacts and the event log it trains from live in
``recsys_core`` (the library the server loads models with too)."""
