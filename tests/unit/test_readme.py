"""The README documents every setting and every exported metric."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from agents.telemetry import PipelineMetrics
from pipeline.config.settings import ENV_VARS, Config
from pipeline.readout.names import LATENCY_METRICS, TOTAL_FAMILIES, WINDOW_METRICS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def config_keys(model: type, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        annotation = field.annotation
        if hasattr(annotation, "model_fields"):
            keys.extend(config_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_environment_variable_is_documented() -> None:
    missing = [var.name for var in ENV_VARS if f"`{var.name}`" not in README]
    assert not missing


def test_every_config_key_is_documented() -> None:
    missing = [key for key in config_keys(Config) if f"`{key}`" not in README]
    assert not missing


def test_every_metric_is_documented() -> None:
    names = {m.name for m in WINDOW_METRICS}
    names |= {name for name, _ in LATENCY_METRICS.values()}
    names |= {name for name, _, _ in TOTAL_FAMILIES}
    registry = CollectorRegistry()
    PipelineMetrics(registry)
    for family in registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        names.add(family.name + suffix)
    missing = sorted(name for name in names if name not in README)
    assert not missing
