"""Start and stop a stock ``python -m sglang.launch_server``: on the test bed, or on any model.

The server runs in its own process group so that stopping it takes its scheduler and
detokenizer processes with it, also when the caller is interrupted; and it gets SIGTERM when the
process that started it dies, so that a caller killed outright (a test run stopped by a timeout)
leaves no server behind. SGLang's own processes already end with their parent.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from lora_telemetry.testbed import cpu_compat, server_flags

_PR_SET_PDEATHSIG = 1
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # Linux only


def end_with_parent() -> None:
    """Run in a child before it executes its program (``preexec_fn``): SIGTERM when the parent dies,
    Linux's parent-death signal, which survives the exec. The kernel sends it when the parent's
    thread that started the child ends, so servers are started from threads that outlive them
    (the main thread, everywhere today)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerStartError(RuntimeError):
    """The server exited or did not become ready; the message carries its log's tail."""


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port the kernel handed out for ``bind(0)`` and that was released again is handed out
    again to the next ``bind(0)``: SGLang's own processes bind that way while the server
    starts, and one of them took the HTTP port before uvicorn did. Ports below the
    ephemeral range are only ever taken by name.
    """
    low = _ephemeral_range_start()
    for _ in range(200):
        port = random.randrange(max(1024, low - 20000), low - 1000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def stop_process_group(process: subprocess.Popen | None, timeout: float) -> None:
    """Stop a process started in its own group, and everything it started: SIGTERM, then SIGKILL
    after ``timeout``. SGLang's schedulers and SMG's workers are children, not the process itself."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


class SGLangServer:
    """A running SGLang server started with ``flags`` (host and port are added); use as a context manager."""

    def __init__(
        self,
        flags: list[str],
        log_path: str | Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.chosen_port = port is None
        self.base_flags = list(flags)
        self._use_port(port or free_port())
        self.env = cpu_compat.prepare_environment({**os.environ, **(env or {})})
        self.env.pop("LORA_TELEMETRY_STATE_DIR", None)  # a new server is a run of its own
        self.log_path = Path(log_path)
        self.process: subprocess.Popen[bytes] | None = None

    def _use_port(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.flags = [*self.base_flags, "--host", "127.0.0.1", "--port", str(port)]

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "sglang.launch_server", *self.flags]

    def start(self, timeout: float = 180.0) -> SGLangServer:
        """Start and wait until ready; a port we chose that was taken meanwhile is chosen again."""
        for attempt in range(3):
            self._launch()
            try:
                self._wait_ready(timeout)
                return self
            except ServerStartError:
                if not (self.chosen_port and attempt < 2 and "address already in use" in self._log_text()):
                    raise
                self.stop()
                self._use_port(free_port())
        return self

    def _launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=end_with_parent,
        )
        log.close()

    def _answers(self, path: str, timeout: float) -> bool:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerStartError(f"SGLang exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._answers("/get_model_info", 2):
                return
            time.sleep(0.5)
        self.stop()
        raise ServerStartError(f"SGLang was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def wait_healthy(self, timeout: float = 600.0) -> None:
        """Wait until SGLang's ``/health`` answers 200, as a load balancer would before sending
        traffic: it answers 503 until the warm-up thread is done, which loads a plan's adapters."""
        deadline = time.monotonic() + timeout
        while not self._answers("/health", 5):
            if time.monotonic() > deadline:
                raise ServerStartError(f"SGLang's /health did not answer 200 within {timeout:.0f} s:\n"
                                       f"{self.log_tail()}")
            time.sleep(0.2)

    def _log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self._log_text().splitlines()[-lines:]) or "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        stop_process_group(self.process, timeout)

    def __enter__(self) -> SGLangServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class TestBedServer(SGLangServer):
    """A running SGLang server on the test bed, with its CPU defaults under ``extra_flags``."""

    def __init__(
        self,
        root: str | Path,
        extra_flags: list[str] | None = None,
        env: dict[str, str] | None = None,
        log_path: str | Path | None = None,
        port: int | None = None,
        warmup: bool = False,
    ) -> None:
        chosen = port or free_port()
        super().__init__(server_flags(root, extra_flags, warmup), log_path or Path(root) / f"server-{chosen}.log",
                         env, chosen)
        self.chosen_port = port is None
