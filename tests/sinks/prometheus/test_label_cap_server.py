"""The adapter label cap on a real server: names past the cap share __other__."""

from __future__ import annotations

import pytest

from tests.conftest import generate, lora_paths, metrics_when, running_server

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(bed, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cap")
    env = {"LORA_TELEMETRY_MAX_ADAPTER_LABELS": "2"}
    with running_server(bed, ["--max-loras-per-batch", "3", *lora_paths(bed, ["qa", "sql", "chat", "code"])],
                        env=env, tmp=tmp) as server:
        yield server


def test_names_past_the_cap_land_in_other_and_are_counted(server):
    sent = {"qa": 2, "sql": 1, "chat": 3, "code": 1}
    for name, times in sent.items():
        for _ in range(times):
            generate(server, name, tokens=2)
    generate(server, None, tokens=2)  # the base model never counts against the cap
    m = metrics_when(server, lambda m: m.total("sglang_lora_requests_total") == 8)
    assert m.by("sglang_lora_requests_total", "lora_name") == {"qa": 2, "sql": 1, "__other__": 4, "__base__": 1}
    assert m.total("sglang_lora_telemetry_label_overflow_total") == 4
    assert not {"chat", "code"} & {s.labels.get("lora_name") for s in m.samples}
