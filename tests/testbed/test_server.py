"""The test-bed server runner: ports that cannot collide, a start that survives one that did, and
no server outliving the process that started it."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from lora_telemetry.testbed import server as runner
from lora_telemetry.testbed.server import free_port


def _ephemeral_start() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_free_ports_lie_below_the_kernels_ephemeral_range():
    ports = {free_port() for _ in range(50)}
    assert max(ports) < _ephemeral_start()
    for port in list(ports)[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_server_whose_port_was_taken_starts_on_another(bed, tmp_path):
    server = runner.TestBedServer(bed.root, log_path=tmp_path / "server.log")
    taken = server.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with server:
            assert server.port != taken
            assert server.url.endswith(f":{server.port}")


def _group(pgid: int) -> list[int]:
    """Live processes (not zombies) of process group ``pgid``, read from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def test_a_server_ends_with_the_process_that_started_it_when_that_is_killed(bed, tmp_path):
    """A caller killed outright (SIGKILL: a test run stopped by a timeout) leaves no SGLang behind."""
    script = ("import sys, time; from lora_telemetry.testbed.server import TestBedServer; "
              "server = TestBedServer(sys.argv[1], log_path=sys.argv[2]).start(); "
              "print(server.process.pid, flush=True); time.sleep(600)")
    starter = subprocess.Popen([sys.executable, "-c", script, str(bed.root), str(tmp_path / "server.log")],
                               stdout=subprocess.PIPE, text=True)
    group = int(starter.stdout.readline())
    try:
        assert len(_group(group)) >= 3  # SGLang's main process, its scheduler and its detokenizer
        starter.kill()
        starter.wait()
        deadline = time.monotonic() + 60
        while _group(group) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _group(group) == []
    finally:
        if _group(group):
            os.killpg(group, signal.SIGKILL)
