"""The README's example runs as printed, against the test bed's adapters."""

from __future__ import annotations

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
    lines = [line.strip() for line in run.stdout.splitlines() if ": '" in line]
    assert [line.split(":")[0] for line in lines] == ["qa", "sql", "base model"]
    assert len({line.split(":", 1)[1] for line in lines}) == 3  # each served by a different model
