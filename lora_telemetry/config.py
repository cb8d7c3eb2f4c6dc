"""Configuration from ``LORA_TELEMETRY_*`` environment variables.

Read lazily, on first use inside a hook, because SGLang publishes its own configuration
only after plugins are loaded. A wrong value raises one :class:`ConfigError` naming the
variable; the plugin reports it once at start and stays off rather than failing later in
a hot path.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from lora_telemetry import plan as plan_module
from lora_telemetry.priorities import PriorityError

PREFIX = "LORA_TELEMETRY_"
_TRUE = {"1", "true", "on", "yes"}
_FALSE = {"0", "false", "off", "no"}


class ConfigError(ValueError):
    """A ``LORA_TELEMETRY_*`` variable has a value we cannot use."""


@dataclass(frozen=True)
class Config:
    enabled: bool = True
    max_adapter_labels: int = 10_000
    top_adapters: int = 50  # adapters with latency histograms of their own (the busiest)
    log_format: str = "json"
    log_file: Path | None = None
    log_level: str = "info"
    traces: bool = False
    metrics_port: int | None = None
    adapter_dir: Path | None = None
    access_log: Path | None = None
    access_log_max_bytes: int = 256 * 2**20
    thrash_window_s: float = 10.0
    plan: plan_module.Plan | None = None
    # adapter name -> eviction priority (the plan's, then LORA_TELEMETRY_PRIORITIES); empty: SGLang's policy
    priorities: dict[str, int] = field(default_factory=dict)
    # Test-only switches: hooks that raise on purpose, hook targets treated as missing.
    fault_hooks: frozenset[str] = frozenset()
    hidden_targets: frozenset[str] = frozenset()


def _raw(name: str) -> str | None:
    value = os.environ.get(PREFIX + name)
    return None if value is None or value.strip() == "" else value.strip()


def _bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(f"{PREFIX}{name}={value!r}: expected one of 1/0, true/false, on/off")


def _int(name: str, default: int | None, low: int, high: int) -> int | None:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={value!r}: expected an integer") from None
    if not low <= number <= high:
        raise ConfigError(f"{PREFIX}{name}={number}: expected a value from {low} to {high}")
    return number


def _seconds(name: str, default: float, high: float) -> float:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={value!r}: expected a number of seconds") from None
    if not 0 < number <= high:
        raise ConfigError(f"{PREFIX}{name}={number}: expected more than 0 and at most {high:g} seconds")
    return number


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _raw(name)
    if value is None:
        return default
    if value.lower() not in choices:
        raise ConfigError(f"{PREFIX}{name}={value!r}: expected one of {', '.join(choices)}")
    return value.lower()


def _path(name: str) -> Path | None:
    value = _raw(name)
    return Path(value).expanduser() if value is not None else None


def _directory(name: str) -> Path | None:
    path = _path(name)
    if path is not None and not path.is_dir():
        raise ConfigError(f"{PREFIX}{name}={str(path)!r}: not a directory")
    return path


def _plan(name: str) -> plan_module.Plan | None:
    path = _path(name)
    if path is None:
        return None
    try:
        return plan_module.read(path)
    except plan_module.PlanError as error:
        raise ConfigError(f"{PREFIX}{name}: {error}") from None


def _priorities(name: str, plan: plan_module.Plan | None) -> dict[str, int]:
    path = _path(name)
    try:
        own = plan_module.read_priorities(path) if path is not None else {}
    except PriorityError as error:
        raise ConfigError(f"{PREFIX}{name}: {error}") from None
    return {**(plan.priorities if plan else {}), **own}


def read() -> Config:
    """Parse the environment now; raises :class:`ConfigError` on the first bad value."""
    plan = _plan("PLAN")
    adapter_dir = _directory("ADAPTER_DIR")
    if plan is not None and plan.preload and adapter_dir is None:
        raise ConfigError(f"{PREFIX}PLAN preloads adapters from the adapter directory: set {PREFIX}ADAPTER_DIR too")
    return Config(
        enabled=_bool("ENABLED", True),
        max_adapter_labels=_int("MAX_ADAPTER_LABELS", 10_000, 1, 10_000_000) or 10_000,
        top_adapters=_int("TOP_ADAPTERS", 50, 0, 100_000) or 0,
        log_format=_choice("LOG_FORMAT", "json", ("json", "console")),
        log_file=_path("LOG_FILE"),
        log_level=_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
        traces=_bool("TRACES", False),
        metrics_port=_int("METRICS_PORT", None, 1, 65535),
        adapter_dir=adapter_dir,
        access_log=_path("ACCESS_LOG"),
        access_log_max_bytes=(_int("ACCESS_LOG_MAX_MB", 256, 1, 1_000_000) or 256) * 2**20,
        thrash_window_s=_seconds("THRASH_WINDOW_S", 10.0, 86400.0),
        plan=plan,
        priorities=_priorities("PRIORITIES", plan),
        fault_hooks=_names("FAULT_HOOKS"),
        hidden_targets=_names("HIDE_TARGETS"),
    )


def _names(name: str) -> frozenset[str]:
    return frozenset(part.strip() for part in (_raw(name) or "").split(",") if part.strip())


@functools.cache
def get() -> Config:
    """The process's configuration, parsed once."""
    return read()
