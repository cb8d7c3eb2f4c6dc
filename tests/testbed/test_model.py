"""The tiny model and adapters: offline, deterministic, cached, and adapters that matter."""

from __future__ import annotations

import hashlib
import json

from safetensors import safe_open

from lora_telemetry.testbed import make
from lora_telemetry.testbed.model import ALL_PROJECTIONS, QV_ONLY


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_adapters_have_mixed_ranks_and_targets(bed):
    seen = set()
    for path in bed.adapters().values():
        config = json.loads((path / "adapter_config.json").read_text())
        seen.add((config["r"], tuple(sorted(config["target_modules"]))))
    assert seen == {(r, tuple(sorted(t))) for r in (4, 8) for t in (ALL_PROJECTIONS, QV_ONLY)}


def test_every_adapter_has_non_zero_b(bed):
    for path in bed.adapters().values():
        with safe_open(path / "adapter_model.safetensors", "pt") as tensors:
            b = [tensors.get_tensor(k) for k in tensors.keys() if "lora_B" in k]
        assert b and all(t.abs().sum() > 0 for t in b)


def test_same_seed_gives_the_same_files(bed, tmp_path):
    again = make(tmp_path / "again", adapters=2)
    for name in ("qa", "sql"):
        assert _digest(again.adapters()[name] / "adapter_model.safetensors") == \
            _digest(bed.adapters()[name] / "adapter_model.safetensors")
    assert _digest(again.model / "model.safetensors") == _digest(bed.model / "model.safetensors")


def test_second_make_reuses_what_is_there(bed):
    before = {p: p.stat().st_mtime_ns for p in bed.root.rglob("*.safetensors")}
    make(bed.root, adapters=8)
    assert {p: p.stat().st_mtime_ns for p in bed.root.rglob("*.safetensors")} == before
