"""The model registry (``recsys_trainer.models.registry``) is the one list of models: the places
that cannot read it (a dataclass with one field per model, the dashboard's offline copies) agree
with it."""

from __future__ import annotations

import dataclasses

from recsys_dashboard import style
from recsys_server import explain
from recsys_trainer.config import ModelsConfig
from recsys_trainer.models import MODELS, Hybrid, Recommender
from recsys_trainer.models.registry import COMPONENTS, NAMES, REGISTRY, SIMILAR, default_weights


def test_models_config_has_one_field_per_model_typed_by_its_config():
    fields = {f.name: f for f in dataclasses.fields(ModelsConfig)}
    assert list(fields) == list(NAMES)
    defaults = ModelsConfig()
    for name, spec in REGISTRY.items():
        assert type(getattr(defaults, name)) is spec.config


def test_registry_agrees_with_the_model_classes():
    assert list(MODELS) == list(NAMES)
    for name, spec in REGISTRY.items():
        assert spec.model.name == name
        overrides = spec.model.similar_items is not Recommender.similar_items
        assert spec.similar_items == overrides, name
    assert set(Hybrid.default_components()) == set(COMPONENTS)
    assert Hybrid().config.weights == default_weights()


def test_every_explanation_kind_is_described_and_labelled():
    for name, spec in REGISTRY.items():
        assert spec.explanation in explain.DESCRIBERS, name
        assert explain.COMPONENT_NAMES[name] == spec.label


def test_dashboard_copies_match_the_registry():
    assert set(style.SIMILAR_MODELS) == set(SIMILAR)
    assert set(style.MODEL_COLORS) == set(NAMES)
