"""The command line explains itself and rejects what it cannot do."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lora_telemetry.cli import build_parser, main


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["testbed", "serve", "--help"], ["doctor", "--help"]])
def test_help_explains(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert len(capsys.readouterr().out.splitlines()) > 3


def test_every_command_is_listed():
    help_text = build_parser().format_help()
    for command in ("demo", "doctor", "testbed"):
        assert command in help_text


def test_testbed_make_rejects_zero_adapters(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "testbed", "make", str(tmp_path),
                             "--adapters", "0"], capture_output=True, text=True)
    assert result.returncode == 2 and "--adapters must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr
