"""Rendering in a helper process: the same bytes as a render in place, a failure that costs the
scrape nothing, and a helper that does not outlive the process it renders for."""

from __future__ import annotations

import os
import sys
import time

from lora_telemetry import events as ev
from lora_telemetry.sinks.prometheus import PrometheusSink, render_process
from lora_telemetry.sinks.prometheus.exposition import Renderer
from lora_telemetry.sinks.prometheus.snapshots import Publisher
from lora_telemetry.sinks.prometheus.store import Store


def _stores(adapters: int) -> tuple[Store, Store, PrometheusSink, PrometheusSink]:
    main, scheduler = Store(), Store()
    tokenizer_sink, scheduler_sink = PrometheusSink(main, 100), PrometheusSink(scheduler, 100)
    for i in range(adapters):
        tokenizer_sink.record(ev.RequestFinished(f"a{i}", "finished", 10 + i, 5, 0.05, 0.4))
        scheduler_sink.record(ev.CacheLookup(f"a{i}", "gpu", i % 2 == 0))
    return main, scheduler, tokenizer_sink, scheduler_sink


def test_the_helper_renders_the_same_bytes_as_a_render_in_place_as_store_and_snapshots_change(tmp_path):
    main, scheduler, tokenizer_sink, scheduler_sink = _stores(30)
    publisher = Publisher(scheduler, tmp_path, {"dp_rank": "0"}, pid=os.getpid())
    publisher.publish()
    in_helper, here = Renderer(main, tmp_path, in_helper=True), Renderer(main, tmp_path)
    try:
        assert in_helper.render() == here.render()
        tokenizer_sink.record(ev.RequestFinished("a3", "aborted", 0, 2, None, 0.1))  # the main store only
        assert in_helper.render() == here.render()
        assert b'sglang_lora_requests_total{lora_name="a3",outcome="aborted"} 1' in in_helper.render()
        scheduler_sink.record(ev.CacheLookup("new", "gpu", False))  # a snapshot only
        publisher.publish()
        assert in_helper.render() == here.render()
        assert b'lora_name="new"' in in_helper.render()
        assert main.get("sglang_lora_telemetry_errors_total", ("render_process",)) is None
    finally:
        in_helper.helper.stop()


def test_a_helper_that_died_costs_one_render_in_place_counted_and_the_next_scrape_starts_another(tmp_path):
    main, _, tokenizer_sink, _ = _stores(5)
    renderer = Renderer(main, tmp_path, in_helper=True)
    try:
        renderer.render()
        first = renderer.helper._process.pid
        os.kill(first, 9)
        renderer.helper._process.wait()
        tokenizer_sink.record(ev.RequestFinished("a1", "finished", 1, 1, 0.01, 0.02))
        body = renderer.render()  # the helper is gone: rendered here, nothing lost
        assert b'sglang_lora_requests_total{lora_name="a1",outcome="finished"} 2' in body
        assert main.get("sglang_lora_telemetry_errors_total", ("render_process",)) == 1
        _next_scrape_is_a_new_helpers(renderer, main)
        assert renderer.helper._process.pid != first
    finally:
        renderer.helper.stop()


def test_a_helper_that_dies_while_rendering_costs_that_scrape_nothing(tmp_path):
    main, *_ = _stores(5)
    renderer = Renderer(main, tmp_path, in_helper=True)
    command, renderer.helper.command = renderer.helper.command, [sys.executable, "-c", "pass"]  # exits at once
    body = renderer.render()
    assert b'sglang_lora_requests_total{lora_name="a4",outcome="finished"} 1' in body
    assert main.get("sglang_lora_telemetry_errors_total", ("render_process",)) == 1
    renderer.helper.command = command
    try:
        _next_scrape_is_a_new_helpers(renderer, main)
    finally:
        renderer.helper.stop()


def _next_scrape_is_a_new_helpers(renderer: Renderer, main: Store) -> None:
    """The failure's count changed the store: the next scrape renders again, exactly, by a live helper."""
    body = renderer.render()
    assert b'sglang_lora_telemetry_errors_total{hook="render_process"} 1' in body
    assert body == Renderer(main, renderer.reader.state_dir if renderer.reader else None).render()
    assert renderer.helper._process.poll() is None


def test_the_helper_exits_once_the_process_it_renders_for_closes_the_pipe(tmp_path):
    main, *_ = _stores(3)
    renderer = Renderer(main, tmp_path, in_helper=True)
    renderer.render()
    process = renderer.helper._process
    process.stdin.close()  # what the kernel does when the main process exits or is killed
    deadline = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.returncode == 0


def test_a_helper_that_hangs_is_killed_and_that_scrape_rendered_in_place(tmp_path, monkeypatch):
    monkeypatch.setattr(render_process, "TIMEOUT_S", 0.5)
    main, *_ = _stores(5)
    for i in range(9000):  # a request larger than a pipe holds: writing it would wait on the helper too
        main.inc("sglang_lora_requests_total", (f"t{i:05d}", "finished"))
    renderer = Renderer(main, tmp_path, in_helper=True)
    renderer.helper.command = [sys.executable, "-c", "import time; time.sleep(60)"]  # reads nothing
    started = time.monotonic()
    body = renderer.render()
    assert time.monotonic() - started < 5
    assert b'sglang_lora_requests_total{lora_name="a0",outcome="finished"} 1' in body
    assert main.get("sglang_lora_telemetry_errors_total", ("render_process",)) == 1
    assert renderer.helper._process is None  # killed; the next scrape starts another


def test_chunks_sent_again_only_where_they_changed_and_the_render_stays_exact(tmp_path):
    """A family of three chunks: one series changed in the middle one, then series dropped (the busiest set
    moving): each render equals one in place, and an unchanged family is sent as the same bytes."""
    main, _, tokenizer_sink, _ = _stores(0)
    for i in range(9000):
        main.inc("sglang_lora_requests_total", (f"t{i:05d}", "finished"))
    in_helper, here = Renderer(main, tmp_path, in_helper=True), Renderer(main, tmp_path)
    try:
        assert in_helper.render() == here.render()
        sent = [data for _, data in in_helper.helper._sent["sglang_lora_requests_total"][1]]
        main.inc("sglang_lora_requests_total", ("t05000", "finished"))
        assert in_helper.render() == here.render()
        now = [data for _, data in in_helper.helper._sent["sglang_lora_requests_total"][1]]
        assert [a is b for a, b in zip(sent, now, strict=True)] == [True, False, True]
        main.keep_only("sglang_lora_requests_total", {f"t{i:05d}" for i in range(0, 9000, 2)}, move_to="__other__")
        body = in_helper.render()
        assert body == here.render()
        assert b'lora_name="t00001"' not in body and b'{lora_name="__other__",outcome="finished"} 4500' in body
    finally:
        in_helper.helper.stop()


def test_the_helper_runs_at_the_lowest_cpu_priority(tmp_path):
    """On a host with few cores SGLang's own processes come first; a render can wait."""
    import psutil

    main, *_ = _stores(2)
    renderer = Renderer(main, tmp_path, in_helper=True)
    try:
        renderer.render()
        assert psutil.Process(renderer.helper._process.pid).nice() == 19
    finally:
        renderer.helper.stop()
