"""Every hook, raising on purpose or facing objects it does not recognise (another SGLang
version), leaves SGLang's call alone: the original runs once and its result comes back."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from lora_telemetry import runtime
from lora_telemetry.hooks import DECLARED, base


class Unrecognisable:
    """Has none of the attributes a hook reads."""


def _call(spec) -> tuple[object, int]:
    sentinel, calls = object(), []

    def original(*args, **kwargs):
        calls.append(args)
        return sentinel

    async def original_async(*args, **kwargs):
        calls.append(args)
        return sentinel

    junk = [Unrecognisable() for _ in range(3)]
    if spec.kind == "AROUND":
        if inspect.iscoroutinefunction(spec.fn):
            result = asyncio.run(spec.fn(original_async, *junk))
        else:
            result = spec.fn(original, *junk)
        return result, len(calls)
    if spec.kind == "AFTER":
        return spec.fn(sentinel, *junk), 1
    return spec.fn(*junk), 1


@pytest.fixture(params=["faults", "version drift"])
def mode(request, monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_TELEMETRY_LOG_FILE", str(tmp_path / "log"))
    runtime.reset()
    names = frozenset(spec.name for spec in DECLARED) if request.param == "faults" else frozenset()
    monkeypatch.setattr(base, "_faults", [names or None])
    yield request.param
    runtime.reset()


@pytest.mark.parametrize("spec", DECLARED, ids=lambda s: s.name)
def test_hook_never_changes_sglangs_call(spec, mode):
    result, calls = _call(spec)
    if spec.kind == "AROUND":
        assert calls == 1
        assert result is not None
    elif spec.kind == "BEFORE":
        assert result is None  # a BEFORE hook that returned something would replace SGLang's arguments
    else:
        assert result is None  # an AFTER hook that returned something would replace SGLang's result


def test_injected_faults_are_counted_per_hook(monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_TELEMETRY_LOG_FILE", str(tmp_path / "log"))
    runtime.reset()
    monkeypatch.setattr(base, "_faults", [frozenset({"pool_slot_copy"})])
    spec = next(s for s in DECLARED if s.name == "pool_slot_copy")
    for _ in range(3):
        _call(spec)
    assert runtime.get().store.get("sglang_lora_telemetry_errors_total", ("pool_slot_copy",)) == 3
    runtime.reset()


def test_a_failure_on_a_rank_that_does_not_count_is_logged_not_counted(monkeypatch, tmp_path):
    """The other TP ranks of a replica fail alike: the replica counts the failure once."""
    from lora_telemetry.hooks import ranks

    monkeypatch.setenv("LORA_TELEMETRY_LOG_FILE", str(tmp_path / "log"))
    runtime.reset()
    monkeypatch.setattr(base, "_faults", [frozenset({"pool_slot_copy"})])
    ranks.set_reporting_rank(False)
    try:
        _call(next(s for s in DECLARED if s.name == "pool_slot_copy"))
        assert runtime.get().store.get("sglang_lora_telemetry_errors_total", ("pool_slot_copy",)) is None
    finally:
        ranks._reporting.clear()
        runtime.reset()
