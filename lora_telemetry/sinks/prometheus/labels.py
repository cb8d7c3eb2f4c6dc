"""Label sets rendered once to their exposition text (``a="x",b="y"``), escaped.

Series live as long as the server, so each label set is formatted once and then found
by a dict lookup. The text is also the key under which samples of several processes merge.
"""

from __future__ import annotations

from lora_telemetry.sinks.prometheus.cooperative import Pacer

_CACHE: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}
_LIMIT = 2_000_000  # entries; past it the cache starts over rather than grow without bound


def escape(value: str) -> str:
    """Escape a label value for the text format (backslash, newline, double quote)."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def label_text(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    key = (names, values)
    text = _CACHE.get(key)
    if text is None:
        text = ",".join(f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True))
        if len(_CACHE) >= _LIMIT:
            _CACHE.clear()
        _CACHE[key] = text
    return text


def by_label_text(names: tuple[str, ...], series: dict[tuple[str, ...], object],
                  extra: tuple[str, ...] = (), pacer: Pacer | None = None) -> dict[str, object]:
    """``series`` keyed by label values -> keyed by label text (``extra`` values appended);
    with a ``pacer``, letting other threads in as it goes (see :mod:`.cooperative`)."""
    if pacer is None or not pacer.enabled:
        if extra:
            return {label_text(names, labels + extra): value for labels, value in series.items()}
        return {label_text(names, labels): value for labels, value in series.items()}
    out: dict[str, object] = {}
    for i, (labels, value) in enumerate(series.items()):
        out[label_text(names, labels + extra if extra else labels)] = value
        if not i & 2047:
            pacer.pause()
    return out
