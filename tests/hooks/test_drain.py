"""SGLang's LoRA drainer on a real server: an adapter drained for a starving one is one episode,
counted with its length and logged at its start and end, which SGLang itself logs at debug level only."""

from __future__ import annotations

import json
import threading
import time

import pytest

from lora_telemetry.scrape import Metrics
from tests.conftest import generate, lora_paths, metrics_when, post, running_server, unexpected_errors

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def drained(bed, tmp_path_factory):
    """qa, sql and code decode in a pool of three slots; chat waits for a slot past the 0.2 s threshold,
    so the drainer drains qa (the fewest tokens left) for chat; chat runs once qa's request is done."""
    tmp = tmp_path_factory.mktemp("drain")
    flags = ["--max-loras-per-batch", "3", "--lora-drain-wait-threshold", "0.2",
             *lora_paths(bed, ["qa", "sql", "code", "chat"])]
    log = tmp / "events.jsonl"
    with running_server(bed, flags, env={"LORA_TELEMETRY_LOG_FILE": str(log)}, tmp=tmp) as server:
        def decode(name: str, tokens: int) -> None:
            post(server, "/generate", {"text": "a long answer", "lora_path": name,
                                       "sampling_params": {"max_new_tokens": tokens, "min_new_tokens": tokens}})

        long = [threading.Thread(target=decode, args=(name, tokens)) for name, tokens in
                (("qa", 250), ("sql", 480), ("code", 480))]
        for thread in long:
            thread.start()
        deadline = time.monotonic() + 10  # all three decoding (the scheduler publishes every 0.25 s)
        while sum(Metrics.fetch(server.url).by("sglang_lora_requests_running", "lora_name").values()) < 3:
            assert time.monotonic() < deadline, "the three long requests were not seen running together"
            time.sleep(0.05)
        chat_sent = time.monotonic()
        generate(server, "chat")  # it runs once qa's request is done, so it returns after that
        window = time.monotonic() - chat_sent  # the client's bound on the drain: it began after chat arrived
        assert all(thread.is_alive() for thread in long[1:]), "sql or code finished first: the scenario did not happen"
        for thread in long:
            thread.join(timeout=120)
        metrics = metrics_when(server, lambda m: m.total("sglang_lora_drain_seconds_count") >= 1, timeout=10)
        yield server, metrics, [json.loads(line) for line in log.read_text().splitlines()], window


def test_the_drain_is_one_episode_of_the_drained_adapter_with_its_length(drained):
    server, metrics, _, window = drained
    assert metrics.by("sglang_lora_drain_seconds_count", "lora_name") == {"qa": 1}
    assert 0 < metrics.total("sglang_lora_drain_seconds_sum", lora_name="qa") < window  # however fast qa decodes
    assert metrics.by("sglang_lora_admission_deferrals_total", "lora_name", reason="slot") == {"chat": 1}
    assert not unexpected_errors(server.log_path.read_text())


def test_the_drain_is_logged_at_its_start_and_end_naming_the_starving_adapter(drained):
    _, metrics, lines, _ = drained
    drains = [(line["event"], line["lora_name"], line["draining_for"]) for line in lines
              if line["event"].startswith("lora.drain.")]
    assert drains == [("lora.drain.started", "qa", "chat"), ("lora.drain.ended", "qa", "chat")]
    [ended] = [line for line in lines if line["event"] == "lora.drain.ended"]
    assert ended["duration_s"] == pytest.approx(metrics.total("sglang_lora_drain_seconds_sum", lora_name="qa"),
                                                abs=1e-5)
