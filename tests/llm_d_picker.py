"""How llm-d's endpoint picker (llm-d-router v0.10.0, core-metrics-extractor) reads a model
server's /metrics, rendered in Python so that tests can hold our exposition to it:

- a metric spec is a PromQL instant selector, ``name{label=value,...}``, the name a legacy
  Prometheus metric name (``spec.go``: ``parseStringToSpec``);
- of the LoRA family's series matching the spec, the one with the largest value is taken, the
  value being its update time (``loraspec.go``: ``getLatestMetric``);
- ``running_lora_adapters`` and ``waiting_lora_adapters`` are split at commas, names trimmed,
  empty ones dropped; ``max_lora``, when not empty, must be an integer (``extractor.go``:
  ``populateLoRAMetrics``, ``addAdapters``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

_SPEC = re.compile(r"^\s*(\S+?)\s*(?:\{([^}]*)\})?\s*$")
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_PAIR = re.compile(r'^\s*(\S+?)\s*=\s*"([^"]*)"\s*$')
_UNQUOTED = re.compile(r'(\w+)\s*=\s*([^",}\s]+)')


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    match = _SPEC.match(_UNQUOTED.sub(r'\1="\2"', spec))
    if match is None or not _NAME.match(match.group(1)):
        raise ValueError(f"not a valid metric specification: {spec!r}")
    labels = {}
    for pair in filter(str.strip, (match.group(2) or "").split(",")):
        found = _PAIR.match(pair)
        if found is None:
            raise ValueError(f"invalid label pair {pair!r} in {spec!r}")
        labels[found.group(1)] = found.group(2)
    return match.group(1), labels


def families(text: str) -> dict[str, list]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


@dataclass
class LoRAState:
    active: set[str]
    waiting: set[str]
    max_active: int


def lora_state(text: str, spec: str) -> LoRAState | None:
    """What the picker's lora-affinity-scorer would see; None when the family is absent."""
    name, labels = parse_spec(spec)
    samples = [s for s in families(text).get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    if not samples:
        return None
    latest = max(samples, key=lambda s: s.value)
    state = LoRAState(set(), set(), 0)
    for label, value in latest.labels.items():
        if label in ("running_lora_adapters", "waiting_lora_adapters"):
            names = {n.strip() for n in value.split(",") if n.strip()}
            (state.active if label.startswith("running") else state.waiting).update(names)
        elif label == "max_lora" and value:
            if not re.fullmatch(r"[+-]?\d+", value):
                raise ValueError(f"max_lora is not an integer: {value!r}")
            state.max_active = int(value)
    return state
