"""Which SGLang releases the hooks are written for.

Every hook target was checked in each release's wheel (signatures included). A release that lacks
a target runs with that hook off: :func:`lora_telemetry.hooks.status` finds it at start-up,
``lora-telemetry doctor`` names it with the series lost. Outside the range the plugin still
attaches whatever it finds, and says the release is untested.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

OLDEST, NEWEST = (0, 5, 20), (0, 5, 23)
SUPPORTED = "0.5.20 to 0.5.23"


def sglang_version() -> str | None:
    try:
        return version("sglang")
    except PackageNotFoundError:
        return None


def _release(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def supported(text: str | None) -> bool:
    return text is not None and OLDEST <= _release(text) <= NEWEST
