"""A real Prometheus server (Debian's package) on a loopback port, for the dashboard tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from lora_telemetry.testbed.server import free_port

RULES = Path(__file__).resolve().parents[2] / "dashboards" / "prometheus" / "rules.yml"


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("promtool") or "promtool", *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


class Prometheus:
    """Scrapes ``target`` (or each of several) every second and evaluates our rules every second."""

    def __init__(self, target: str | list[str], workdir: Path) -> None:
        targets = [target] if isinstance(target, str) else target
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = workdir / "rules.yml"
        rules.write_text(RULES.read_text().replace("interval: 15s", "interval: 1s"))
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "sglang", "static_configs": [{"targets": targets}]}],
        }))
        self.command = [shutil.which("prometheus") or "prometheus", f"--config.file={config}",
                        f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"]
        self.log = workdir / "prometheus.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Prometheus:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2):
                    return self
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"Prometheus did not start: {self.log.read_text()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait(30)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr, **({"time": at} if at else {})})
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def query_range(self, expr: str, seconds: int, step: str = "2s") -> list[dict[str, Any]]:
        now = time.time()
        url = self.url + "/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": expr, "start": now - seconds, "end": now, "step": step})
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())["data"]["result"]

    def wait_for(self, expr: str, check: Any, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if check(result) or time.monotonic() > deadline:
                return result
            time.sleep(0.5)
