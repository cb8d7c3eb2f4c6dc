"""The command line explains itself and rejects what it cannot do."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lora_telemetry.cli import build_parser, main


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["testbed", "serve", "--help"], ["doctor", "--help"],
                                  ["top", "--help"], ["testbed", "fleet", "--help"]])
def test_help_explains(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert len(capsys.readouterr().out.splitlines()) > 3


def test_every_command_is_listed():
    help_text = build_parser().format_help()
    for command in ("demo", "doctor", "testbed", "top"):
        assert command in help_text


def test_testbed_make_rejects_zero_adapters(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "testbed", "make", str(tmp_path),
                             "--adapters", "0"], capture_output=True, text=True)
    assert result.returncode == 2 and "--adapters must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_command_whose_extra_is_missing_says_which_extra_in_one_line(tmp_path):
    """As on a lean install: the modules that only the extras bring cannot be imported."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\n"
                       "for name in ('rich', 'httpx', 'matplotlib', 'peft', 'smg'):\n"
                       "    sys.modules[name] = None\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}
    cases = {("advise", "x.log"): "[bench]", ("testbed", "make", str(tmp_path / "bed")): "[testbed]",
             ("demo",): "[testbed]", ("bench", "--hooks"): "[bench]", ("top", "http://127.0.0.1:9"): "[top]",
             ("testbed", "fleet", str(tmp_path / "bed")): "[fleet]"}
    for argv, extra in cases.items():
        run = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", *argv], capture_output=True, text=True,
                             env=env, timeout=120)
        assert run.returncode == 2, (argv, run.stderr[-2000:])
        assert run.stderr.count("\n") == 1 and extra in run.stderr and "pip install" in run.stderr, run.stderr
    lean = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "dashboards", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert lean.returncode == 0 and (tmp_path / "out" / "prometheus" / "rules.yml").exists(), lean.stderr


def test_dashboards_writes_what_the_package_ships(tmp_path):
    from lora_telemetry.dashboards import FILES, HERE

    assert main(["dashboards", str(tmp_path)]) == 0
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (HERE / name).read_bytes()
