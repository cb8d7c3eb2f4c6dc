"""The wheel is what a serving image gets: core requirements only, the dashboards inside, and
installed beside an SGLang it leaves alone; the plugin then imports nothing outside the core."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = {"prometheus-client", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http", "structlog"}
EXTRA_ONLY = ("rich", "httpx", "matplotlib", "peft")


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    return out


def _wheel(dist: Path) -> Path:
    [wheel] = dist.glob("*.whl")
    return wheel


def test_sdist_and_wheel_pass_twine_check(dist):
    check = subprocess.run([sys.executable, "-m", "twine", "check", *map(str, dist.iterdir())],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and check.stdout.count("PASSED") == 2, check.stdout + check.stderr


def test_the_wheel_requires_only_the_core_and_ships_the_dashboards(dist):
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(next(n for n in names if n.endswith("METADATA"))).decode()
    required = {line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")}
    core = {r.split(">")[0].split("=")[0].split("[")[0].strip() for r in required if "extra ==" not in r}
    assert core == CORE
    for name in ("grafana/lora-telemetry.json", "prometheus/rules.yml", "prometheus/rules_test.yml",
                 "llm-d/endpoint-picker.yaml"):
        assert f"lora_telemetry/dashboards/{name}" in names
    assert "lora_telemetry/testbed/stand_in/sgl_kernel/__init__.py" in names


def _versions(python: Path) -> dict[str, str]:
    probe = "import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in ('sglang', 'torch')}))"
    return json.loads(subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True,
                                     timeout=120).stdout)


def test_installed_beside_sglang_the_plugin_leaves_sglang_and_torch_alone(dist, tmp_path):
    """A fresh venv over the SGLang this suite runs on (0.5.23, or 0.5.21 in the second run of
    ./dev.sh test): the wheel installs, pip touches neither SGLang nor torch, doctor says what works."""
    venv = tmp_path / "serving"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "serving-image.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    before = _versions(python)
    pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(_wheel(dist))],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    assert _versions(python) == before
    assert not list(site.glob("sglang*")) and not list(site.glob("torch*"))  # nothing installed over them
    doctor = subprocess.run([str(venv / "bin" / "lora-telemetry"), "doctor", "--json"], capture_output=True,
                            text=True, timeout=300)
    report = json.loads(doctor.stdout)
    missing = {hook["hook"] for hook in report["hooks"] if not hook["found"]}
    assert report["sglang"] == before["sglang"] and report["sglang_supported"]
    assert missing == ({"tokenizer_release"} if before["sglang"] < "0.5.22" else set())
    assert doctor.returncode == (1 if missing else 0)


def test_loading_the_plugin_imports_nothing_outside_the_core():
    """SGLang's own modules (every hook target's) are imported first: what is new is ours."""
    from lora_telemetry.hooks import DECLARED

    owners = sorted({spec.target.rpartition(".")[0] for spec in DECLARED})
    targets = {spec.target for spec in DECLARED if spec.wanted is None}  # the others wait to be asked for
    probe = (
        "import json, pkgutil, sys, warnings\n"
        "warnings.filterwarnings('ignore')\n"
        f"for owner in {owners!r}:\n"
        "    pkgutil.resolve_name(owner)\n"
        f"present = [t for t in {sorted(targets)!r} if hasattr(pkgutil.resolve_name(t.rpartition('.')[0]),"
        " t.rpartition('.')[2])]\n"
        "print(len(present))\n"
        f"for name in {EXTRA_ONLY!r}:\n"
        "    sys.modules[name] = None  # as on a lean install: importing it fails\n"
        "before = set(sys.modules)\n"
        "from lora_telemetry import plugin\n"
        "plugin.activate()\n"
        "from sglang.srt.plugins.hook_registry import HookRegistry\n"
        "print(len(HookRegistry._hooks))\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "LORA_TELEMETRY_LOG_FILE": "/dev/null"})
    assert run.returncode == 0, run.stderr[-3000:]
    *_, present, registered, modules = run.stdout.strip().splitlines()
    # every hook this SGLang has a target for registers without the extras (0.5.21 lacks one target)
    assert int(registered) == int(present) >= len(targets) - 1
    imported = set(json.loads(modules))
    assert imported <= {"lora_telemetry", "prometheus_client", "opentelemetry", "structlog", "google"}, imported
    assert "could not start" not in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
