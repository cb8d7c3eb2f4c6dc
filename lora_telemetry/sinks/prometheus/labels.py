"""Label sets rendered once to their exposition text (``a="x",b="y"``), escaped.

Series live as long as the server, so each label set is formatted once and then found by a
subscript in a table of its family's label names: at 10,000 adapters a render looks up about
60,000 label sets, and a function call per set (with the tuple it builds for a key) cost 40 ms
of the 100 a render may take. The text is also the key under which samples of several
processes merge.
"""

from __future__ import annotations

from lora_telemetry.sinks.prometheus.cooperative import Pacer

# (label names, values appended to every set) -> label values -> text
_TEXTS: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[tuple[str, ...], str]] = {}
_LIMIT = 2_000_000  # label sets in all; past it the tables start over rather than grow without bound
_held = 0


def escape(value: str) -> str:
    """Escape a label value for the text format (backslash, newline, double quote)."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _filled(names: tuple[str, ...], extra: tuple[str, ...], series: dict[tuple[str, ...], object]) -> dict:
    """The texts of ``names``' label sets, with those of ``series`` not yet there formatted."""
    global _held
    if _held + len(series) > _LIMIT:
        _TEXTS.clear()
        _held = 0
    texts = _TEXTS.setdefault((names, extra), {})
    for labels in series:
        if labels not in texts:
            texts[labels] = ",".join(f'{n}="{escape(v)}"' for n, v in zip(names, labels + extra, strict=True))
            _held += 1
    return texts


def by_label_text(names: tuple[str, ...], series: dict[tuple[str, ...], object],
                  extra: tuple[str, ...] = (), pacer: Pacer | None = None) -> dict[str, object]:
    """``series`` keyed by label values -> keyed by label text (``extra`` values appended);
    with a ``pacer``, letting other threads in as it goes (see :mod:`.cooperative`)."""
    texts = _TEXTS.get((names, extra)) or _filled(names, extra, series)
    if pacer is None or not pacer.enabled:
        try:
            return {texts[labels]: value for labels, value in series.items()}
        except KeyError:  # a label set seen for the first time
            texts = _filled(names, extra, series)
            return {texts[labels]: value for labels, value in series.items()}
    out: dict[str, object] = {}
    for i, (labels, value) in enumerate(series.items()):
        text = texts.get(labels)
        if text is None:
            texts = _filled(names, extra, series)
            text = texts[labels]
        out[text] = value
        if not i & 2047:
            pacer.pause()
    return out
