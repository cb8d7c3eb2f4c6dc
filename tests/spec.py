"""The metric tables of ``docs/SPEC.md``, parsed: the contract the code is checked against."""

from __future__ import annotations

import re
from pathlib import Path

SPEC = Path(__file__).resolve().parents[1] / "docs" / "SPEC.md"


def spec_families() -> dict[str, tuple[str, tuple[str, ...], bool]]:
    """name -> (type, label names, busiest) for every row of the spec's metric tables; busiest: its
    ``lora_name`` is marked "(busiest)", kept only for the busiest adapters."""
    text = SPEC.read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    families: dict[str, tuple[str, tuple[str, ...], bool]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([a-z0-9_]+)`", cells[0])
        labels = tuple(label.replace("(busiest)", "").strip() for label in cells[2].split(",") if label.strip())
        for name in names:
            families[name] = (cells[1], labels, "(busiest)" in cells[2])
    return families
