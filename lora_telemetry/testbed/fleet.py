"""A fleet on the test bed: N SGLang servers with SMG, SGLang's model gateway, in front of them.

Each replica is a :class:`TestBedServer` with the same adapters and its own access log; SMG
(``pip install smg``, the release pinned in :data:`SMG_VERSION`) routes ``/generate`` and
``/v1/completions`` to them by one of its policies. SMG registers the workers that answer when
it starts, so the replicas start first, one after the other (two cores), then the gateway.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from lora_telemetry.testbed.server import (
    ServerStartError,
    TestBedServer,
    end_with_parent,
    free_port,
    stop_process_group,
)

SMG_VERSION = "1.13.0"  # the SMG release this fleet was written and tested against (SGLang 0.5.23)
SMG_POLICIES = ("round_robin", "random", "cache_aware", "power_of_two", "consistent_hashing", "least_load")


class Gateway:
    """SMG in front of ``workers``, in a process group of its own; use as a context manager."""

    def __init__(self, workers: list[str], log_path: Path, policy: str = "round_robin") -> None:
        if policy not in SMG_POLICIES:
            raise ValueError(f"unknown gateway policy {policy!r}; one of {', '.join(SMG_POLICIES)}")
        if importlib.util.find_spec("smg") is None:
            raise ModuleNotFoundError(f"SMG is not installed: pip install smg=={SMG_VERSION}", name="smg")
        self.workers, self.policy, self.log_path = workers, policy, log_path
        self.port = free_port()
        self.metrics_port = next(p for p in iter(free_port, None) if p != self.port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "smg", "launch", "--host", "127.0.0.1", "--port", str(self.port),
                "--worker-urls", *self.workers, "--policy", self.policy, "--prometheus-host", "127.0.0.1",
                "--prometheus-port", str(self.metrics_port), "--log-level", "warn"]

    def start(self, timeout: float = 60.0) -> Gateway:
        """Start and wait until every worker is registered and healthy."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, preexec_fn=end_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(f"SMG exited with {self.process.returncode}:\n{self._log_tail()}")
            if self._healthy() == len(self.workers):
                return self
            time.sleep(0.3)
        self.stop()
        raise ServerStartError(f"SMG did not register {len(self.workers)} healthy workers in {timeout:.0f} s:\n"
                               f"{self._log_tail()}")

    def _healthy(self) -> int:
        try:
            with urllib.request.urlopen(self.url + "/readiness", timeout=2) as response:
                return int(json.loads(response.read()).get("healthy_workers", 0))
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return 0

    def _log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        stop_process_group(self.process, timeout)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Fleet:
    """``replicas`` test-bed servers, each with its own access log, behind one gateway."""

    def __init__(self, root: str | Path, replicas: int, flags: list[str], workdir: str | Path,
                 policy: str = "round_robin", env: dict[str, str] | None = None) -> None:
        if replicas < 1:
            raise ValueError(f"a fleet needs at least one replica, not {replicas}")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.access_logs = [self.workdir / f"replica-{i}-access.log" for i in range(replicas)]
        for log in self.access_logs:
            log.unlink(missing_ok=True)
        self.servers = [TestBedServer(root, flags, env={**(env or {}), "LORA_TELEMETRY_ACCESS_LOG": str(log)},
                                      log_path=self.workdir / f"replica-{i}.log")
                        for i, log in enumerate(self.access_logs)]
        self.policy = policy
        self.gateway: Gateway | None = None

    @property
    def url(self) -> str:
        assert self.gateway is not None, "the fleet is not started"
        return self.gateway.url

    def start(self, on_started: Callable[[str], None] = lambda _what: None) -> Fleet:
        try:
            for i, server in enumerate(self.servers):
                server.start()
                on_started(f"replica {i} at {server.url}")
            self.gateway = Gateway([s.url for s in self.servers], self.workdir / "gateway.log", self.policy).start()
            on_started(f"gateway at {self.gateway.url}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        for server in self.servers:
            server.stop()

    def scrape_config(self) -> dict:
        """A Prometheus scrape job for every replica (the instance label tells them apart)."""
        return {"job_name": "sglang", "static_configs": [
            {"targets": [s.url.removeprefix("http://") for s in self.servers]}]}

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
