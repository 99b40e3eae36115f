"""The model registry (``recsys_core.models.registry``) is the one list of models: the places
that cannot read it (a dataclass with one field per model, the dashboard's offline copies) agree
with it, and every suite that must cover each model (the contract, recommend_one, the trainer
CLI, the artifacts round trip, the Recommend and SimilarItems RPCs) collects a test per
registered model: parametrised over the registry, not over a list of their own."""

from __future__ import annotations

import dataclasses
import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_core.models import MODELS, Hybrid, Recommender
from recsys_core.models.registry import COMPONENTS, NAMES, REGISTRY, SIMILAR, default_weights
from recsys_dashboard import style
from recsys_server import explain
from recsys_trainer.config import ModelsConfig


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
        if spec.blend_weight is not None:  # a component gives its part of the blend
            assert spec.model.blend_part is not Recommender.blend_part, name
    assert set(Hybrid.default_components()) == set(COMPONENTS)
    assert Hybrid().config.weights == default_weights()


def test_every_explanation_kind_is_described_and_labelled():
    for name, spec in REGISTRY.items():
        assert spec.explanation in explain.DESCRIBERS, name
        assert explain.COMPONENT_NAMES[name] == spec.label


def test_dashboard_copies_match_the_registry():
    assert set(style.SIMILAR_MODELS) == set(SIMILAR)
    assert set(style.MODEL_COLORS) == set(NAMES)


# -- coverage: every registered model goes through every suite that must cover it ------------

REPO = Path(__file__).resolve().parents[2]
CONTRACT = "trainer/tests/test_model_contract.py"
REQUIRED = {
    # file, test function (no parameters): every registered model must appear in its ids
    "model contract (every test)": (CONTRACT, None),
    "recommend_one": (
        "trainer/tests/test_recommend_one.py",
        "test_recommend_one_is_recommend_for_one_row",
    ),
    "trainer CLI --models": ("trainer/tests/test_cli.py", "test_train_one_model"),
    "artifacts publish + load": (
        "trainer/tests/test_artifacts.py",
        "test_every_registered_model_round_trips",
    ),
    "Recommend RPC": (
        "server/tests/test_server_rpc.py",
        "test_every_model_answers_with_confidence",
    ),
}


@functools.cache
def collected() -> dict[tuple[str, str], set[str]]:
    """(file, test function) -> the parameter ids pytest collects for it (split at '-')."""
    files = sorted({f for f, _ in REQUIRED.values()})
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ids: dict[tuple[str, str], set[str]] = {}
    for line in out.splitlines():
        m = re.fullmatch(r"([^:]+)::(?:\w+::)?(\w+)(?:\[(.*)\])?", line.strip())
        if m:
            ids.setdefault((m[1], m[2]), set()).update((m[3] or "").split("-"))
    return ids


@pytest.mark.parametrize("suite", list(REQUIRED))
def test_every_registered_model_is_covered(suite):
    path, test = REQUIRED[suite]
    ids = collected()
    tests = [k for k in ids if k[0] == path and (test is None or k[1] == test)]
    assert tests, f"{suite}: {path}::{test or '*'} collected nothing"
    for key in tests:
        if test is None and not ids[key] & set(NAMES):
            continue  # a contract module test that is not per model
        missing = set(NAMES) - ids[key]
        assert not missing, f"{suite}: {key[1]} does not cover {sorted(missing)}"


def test_similar_items_rpc_covers_the_capable_models_and_refuses_the_others():
    ids = collected()
    rpc = "server/tests/test_server_rpc.py"
    assert set(SIMILAR) <= ids[(rpc, "test_similar_items")]
    refused = ids[(rpc, "test_similar_items_refuses_models_without_it")]
    assert refused == set(NAMES) - set(SIMILAR)
