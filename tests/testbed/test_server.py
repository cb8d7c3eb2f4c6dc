"""The test-bed server runner: ports that cannot collide, and a start that survives one that did."""

import socket
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
