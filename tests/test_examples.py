"""The README's example runs as printed, against the test bed's adapters."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mixed_call.py"


def test_readme_shows_the_example_as_it_is():
    assert EXAMPLE.read_text().strip() in (ROOT / "README.md").read_text()


@pytest.mark.server
def test_mixed_call_prints_which_adapter_served_which_output(bed):
    run = subprocess.run([sys.executable, str(EXAMPLE), str(bed.root)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    # one line per prompt: "<adapter>: <repr of the text>"; repr quotes with " when the text holds a '
    lines = [m.groups() for m in re.finditer(r"^\s*(qa|sql|base model): (['\"].*)$", run.stdout, re.MULTILINE)]
    assert [name for name, _ in lines] == ["qa", "sql", "base model"], run.stdout
    assert len({text for _, text in lines}) == 3  # each served by a different model
