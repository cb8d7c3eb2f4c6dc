"""Hook logic for the layouts and modes the CPU test bed cannot run whole, on stand-in objects:
DP attention's reporting ranks, memory-only ranks, overlap loading's copies, SGLang's own adapters,
deferrals counted once per request, routing gauges built from the running batch (finished requests
left out), and slot loads charged to their requests in the overlap scheduler's order."""

from __future__ import annotations

import time
from types import SimpleNamespace as NS

import pytest

from lora_telemetry import events as ev
from lora_telemetry import runtime
from lora_telemetry.hooks import drainer as drainer_hooks
from lora_telemetry.hooks import lora_manager, memory_pool, scheduler
from lora_telemetry.hooks import ranks as rank_state


@pytest.fixture
def emitted(monkeypatch):
    """Events as the hooks emit them; work they defer to the publisher thread is run at once."""
    seen: list = []
    monkeypatch.setattr(runtime, "emit", seen.append)
    monkeypatch.setattr(runtime, "defer", lambda work: work())
    yield seen
    rank_state._reporting.clear()
    rank_state._pool_shared.clear()


def _of(seen: list, kind: type) -> list:
    return [e for e in seen if isinstance(e, kind)]


class Mode:
    def __init__(self, name: str) -> None:
        self.name = name

    def is_extend(self) -> bool:
        return self.name == "extend"

    def is_prebuilt(self) -> bool:
        return self.name == "prebuilt"

    def is_decode(self) -> bool:
        return self.name == "decode"


def _pool(slots: dict, overlap: bool = False) -> NS:
    buffer = NS(numel=lambda: 16, element_size=lambda: 4)
    return NS(uid_to_buffer_id=slots, max_loras_per_batch=3, A_buffer={"q": [buffer]}, B_buffer={"q": [buffer]},
              enable_lora_overlap_loading=overlap, eviction_policy=NS())


def _scheduler(pool: NS, refs: dict, overlap: bool = False, drainer=None, running=()) -> NS:
    manager = NS(lora_refs=refs, memory_pool=pool, pending_lora_load_events={})
    return NS(tp_worker=NS(model_runner=NS(lora_manager=manager)), enable_lora=True,
              enable_lora_overlap_loading=overlap, lora_drainer=drainer, waiting_queue=[],
              running_batch=NS(reqs=list(running)), max_loras_per_batch=3)


def _req(rid: str, uid: str | None, finished: bool = False) -> NS:
    return NS(rid=rid, lora_id=uid, time_stats=None, finished_reason="length" if finished else None)


REFS = {"u1": NS(lora_name="qa", pinned=False), "u2": NS(lora_name="sql", pinned=False)}


def test_a_request_refused_on_every_pass_is_deferred_once_and_its_wait_observed(emitted):
    rank_state.set_reporting_rank(True)
    sched = _scheduler(_pool({None: 0}), REFS)
    req = _req("r1", "u1")
    for _ in range(50):  # one refusal per scheduling pass
        assert scheduler.can_schedule_lora_req(lambda *a: False, sched, req, set()) is False
    assert [(e.lora_name, e.reason) for e in _of(emitted, ev.AdmissionDeferred)] == [("qa", "slot")]
    time.sleep(0.01)
    scheduler.run_batch(sched, NS(reqs=[req], forward_mode=Mode("extend")))
    [waited] = _of(emitted, ev.AdmissionWaited)
    assert waited.lora_name == "qa" and waited.seconds >= 0.01
    scheduler.can_schedule_lora_req(lambda *a: False, sched, req, set())  # retracted and refused again
    scheduler.run_batch(sched, NS(reqs=[req], forward_mode=Mode("extend")))
    assert len(_of(emitted, ev.AdmissionDeferred)) == 1 and len(_of(emitted, ev.AdmissionWaited)) == 1


def test_a_request_the_drainer_holds_back_is_deferred_by_policy(emitted):
    rank_state.set_reporting_rank(True)
    sched = _scheduler(_pool({None: 0}), REFS, drainer=NS(can_schedule=lambda req: False))
    scheduler.can_schedule_lora_req(lambda *a: False, sched, _req("r1", "u2"), set())
    assert [(e.lora_name, e.reason) for e in _of(emitted, ev.AdmissionDeferred)] == [("sql", "drain")]


def test_with_overlap_loading_the_first_admission_check_is_the_gpu_lookup(emitted):
    """A request whose adapter's copy is still in flight starts no copy: a hit, as the replay counts it."""
    rank_state.set_reporting_rank(True)
    pool = _pool({None: 0, "u1": 1})
    sched = _scheduler(pool, {**REFS, "u3": NS(lora_name="chat", pinned=False)}, overlap=True)
    held, copying, absent = _req("r1", "u1"), _req("r2", "u2"), _req("r3", "u3")
    pool.uid_to_buffer_id["u2"] = 2  # its copy launched on the side stream, not done
    sched.tp_worker.model_runner.lora_manager.pending_lora_load_events = {"u2": object()}
    for _ in range(3):
        scheduler.can_schedule_lora_req(lambda *a: True, sched, held, set())
        scheduler.can_schedule_lora_req(lambda *a: False, sched, copying, set())
        scheduler.can_schedule_lora_req(lambda *a: False, sched, absent, set())
    pool.uid_to_buffer_id["u3"] = 3
    scheduler.run_batch(sched, NS(reqs=[held, copying, absent], forward_mode=Mode("extend")))  # looked up already
    lookups = [(e.lora_name, e.hit, e.at_admission) for e in _of(emitted, ev.CacheLookup)]
    assert lookups == [("qa", True, True), ("sql", True, True), ("chat", False, True)]


def test_routing_gauges_count_the_running_batch_beside_a_prefill_batch(emitted):
    rank_state.set_reporting_rank(True)
    scheduler._state["last_flush"] = 0.0
    running = [_req("a", "u1"), _req("b", "u1")]
    sched = _scheduler(_pool({None: 0, "u1": 1, "u2": 2}), REFS, running=running)
    scheduler.run_batch(sched, NS(reqs=[_req("c", "u2"), _req("d", None)], forward_mode=Mode("extend")))
    [routing] = _of(emitted, ev.RoutingState)
    assert routing.running == {"qa": 2, "sql": 1}


def test_with_pipeline_parallelism_the_routing_gauges_count_every_micro_batch(emitted):
    """SGLang swaps ``running_batch`` per micro-batch; the running requests are those of all of them."""
    rank_state.set_reporting_rank(True)
    scheduler._state["last_flush"] = 0.0
    sched = _scheduler(_pool({None: 0, "u1": 1, "u2": 2}), REFS)
    sched.running_mbs = [NS(reqs=[_req("a", "u1"), _req("b", "u1")]), NS(reqs=[_req("c", "u2")])]
    sched.running_batch = sched.running_mbs[1]  # the micro-batch whose turn it is
    scheduler.run_batch(sched, NS(reqs=sched.running_batch.reqs, forward_mode=Mode("decode")))
    [routing] = _of(emitted, ev.RoutingState)
    assert routing.running == {"qa": 2, "sql": 1}


def test_a_finished_request_not_yet_filtered_from_the_running_batch_holds_no_slot(emitted):
    """The overlap scheduler filters finished requests a step late; SGLang's admission skips them."""
    rank_state.set_reporting_rank(True)
    scheduler._state["last_flush"] = 0.0
    running = [_req("a", "u1", finished=True), _req("b", "u2")]
    sched = _scheduler(_pool({None: 0, "u1": 1, "u2": 2}), REFS, running=running)
    scheduler.run_batch(sched, NS(reqs=[_req("c", "u2")], forward_mode=Mode("extend")))
    [routing] = _of(emitted, ev.RoutingState)
    assert routing.running == {"sql": 2}


def test_idle_and_prebuilt_batches_are_not_batches_of_adapters(emitted):
    """A PD decode server first schedules a request in a prebuilt batch: its lookup, no forward."""
    rank_state.set_reporting_rank(True)
    scheduler._batch_reqs.clear()
    scheduler._state.update(last_flush=time.monotonic(), busy=True)
    sched = _scheduler(_pool({None: 0}), REFS)
    scheduler.run_batch(sched, NS(reqs=[], forward_mode=Mode("idle")))
    prefilled = _req("p", "u1")
    scheduler.run_batch(sched, NS(reqs=[prefilled], forward_mode=Mode("prebuilt")))
    scheduler.run_batch(sched, NS(reqs=[prefilled], forward_mode=Mode("decode")))
    scheduler.on_idle(None, sched)
    [composition] = _of(emitted, ev.BatchComposition)
    assert composition.batches == {1: 1}
    assert [(e.lora_name, e.hit) for e in _of(emitted, ev.CacheLookup)] == [("qa", False)]


def test_decode_batches_are_counted_off_the_schedulers_thread_and_walked_once_while_unchanged(monkeypatch):
    """A running batch of thousands of requests is not walked on every step: the hook keeps SGLang's
    request list (replaced when the batch changes, never edited), and the publisher counts it."""
    rank_state.set_reporting_rank(True)
    emitted, deferred, reads = [], [], []
    monkeypatch.setattr(runtime, "emit", emitted.append)
    monkeypatch.setattr(runtime, "defer", deferred.append)

    class Req(NS):
        @property
        def lora_id(self) -> str:
            reads.append(self.rid)
            return self.uid

    scheduler._batch_reqs.clear()
    scheduler._state.update(last_flush=time.monotonic(), busy=True)
    sched = _scheduler(_pool({None: 0, "u1": 1, "u2": 2}), REFS)
    steady = [Req(rid=f"r{i}", uid="u1" if i % 2 else "u2", finished_reason=None) for i in range(64)]
    for _ in range(10):
        scheduler.run_batch(sched, NS(reqs=steady, forward_mode=Mode("decode")))
    filtered = steady[:1]  # SGLang's filter makes a new list: one adapter left
    scheduler.run_batch(sched, NS(reqs=filtered, forward_mode=Mode("decode")))
    assert reads == [] and emitted == []  # nothing read on the scheduler's thread
    scheduler.on_idle(None, sched)
    for work in deferred:
        work()
    [composition] = _of(emitted, ev.BatchComposition)
    assert composition.batches == {2: 10, 1: 1}
    assert len(reads) == len(steady) + len(filtered)
    rank_state._reporting.clear()


@pytest.mark.parametrize(("ranks", "reports", "dp_rank"), [
    ({"tp_rank": 0, "attn_tp_rank": 0, "attn_cp_rank": 0, "pp_rank": 0, "dp_rank": 0}, True, 0),
    # DP attention, TP 4 = 4 DP ranks of attention-TP size 1: each rank has its own scheduler and pool.
    ({"tp_rank": 3, "attn_tp_rank": 0, "attn_cp_rank": 0, "pp_rank": 0, "dp_rank": 3}, True, 3),
    ({"tp_rank": 1, "attn_tp_rank": 1, "attn_cp_rank": 0, "pp_rank": 0, "dp_rank": 0}, False, 0),
    ({"tp_rank": 2, "attn_tp_rank": 0, "attn_cp_rank": 1, "pp_rank": 0, "dp_rank": 0}, False, 0),
    ({"tp_rank": 0, "attn_tp_rank": 0, "attn_cp_rank": 0, "pp_rank": 1, "dp_rank": 0}, False, 0),
])
def test_reporting_schedulers_are_those_sglang_reports_its_own_metrics_from(monkeypatch, ranks, reports, dp_rank):
    import sys
    import types

    module = types.ModuleType("sglang.srt.runtime_context")
    module.get_parallel = lambda: NS(**ranks)
    monkeypatch.setitem(sys.modules, "sglang.srt.runtime_context", module)
    rank_state._reporting.clear()
    try:
        assert rank_state.reporting_rank() is reports
        assert runtime.process_labels() == {"dp_rank": str(dp_rank)}
    finally:
        rank_state._reporting.clear()
        runtime.reset()


def _prepare(pool: NS, uids: set, refs: dict, adapters: dict | None = None) -> None:
    def fill(self, cur_uids, **kwargs):
        for uid in cur_uids:
            self.uid_to_buffer_id.setdefault(uid, len(self.uid_to_buffer_id))

    memory_pool.prepare_lora_batch(fill, pool, uids, lora_adapters=adapters or {}, lora_modules=[],
                                   lora_refs=refs)


def test_a_rank_that_does_not_count_reports_only_the_memory_it_holds(emitted):
    rank_state.set_reporting_rank(False)
    pool = _pool({None: 0})
    memory_pool.load_lora_weight_to_buffer(lambda *a, **k: None, pool, "u1")
    _prepare(pool, {"u1"}, REFS)
    assert not _of(emitted, ev.SlotLoaded) and not _of(emitted, ev.SlotEvicted)
    [residency] = _of(emitted, ev.Residency)
    assert (residency.lora_name, residency.tier, residency.memory_only) == ("qa", "gpu", True)
    assert all(e.memory_only for e in _of(emitted, ev.PoolState))
    assert "u1" not in memory_pool._copy_seconds  # nothing kept on ranks that do not count


def test_sglangs_own_draft_pool_is_in_no_series(emitted):
    """UNO's LoRA manager (sglang/srt/speculative/uno_lora.py) loads its draft, then makes a 2-slot
    pool whose first batch is the base model's alone (LoRAManager.init_memory_pool), then the draft's.
    Neither is a slot load of ours, and that pool's slots are not the server's."""
    rank_state.set_reporting_rank(True)
    draft_pool, refs = _pool({}), {"d": NS(lora_name="__uno_draft__", pinned=True)}
    _prepare(draft_pool, {None}, refs)
    _prepare(draft_pool, {None, "d"}, refs)
    assert emitted == []
    _prepare(_pool({}), {None}, REFS)  # a served pool's first batch is counted
    assert [e.lora_name for e in _of(emitted, ev.SlotLoaded)] == [ev.BASE] and _of(emitted, ev.PoolState)


def test_overlapped_copies_are_timed_until_done_and_their_pinned_copy_counted(emitted):
    rank_state.set_reporting_rank(True)
    tensor = NS(numel=lambda: 10, element_size=lambda: 4)
    adapter = NS(layers=[NS(weights={"a": tensor}, pinned_weights={"a": tensor})])
    pool = _pool({None: 0}, overlap=True)

    def launch(loader):  # SGLang's overlap loader: fetch into the pool, on its side stream
        memory_pool.load_lora_weight_to_buffer(lambda *a, **k: None, pool, "u1")
        _prepare(pool, {"u1"}, REFS, {"u1": adapter})

    memory_pool.try_start_overlap_load(launch, NS())
    [loaded] = _of(emitted, ev.SlotLoaded)
    assert loaded.seconds is None  # not known until the copy is done
    host = [e for e in _of(emitted, ev.Residency) if e.tier == "host"]
    assert [(e.bytes, e.memory_only) for e in host] == [(80, True)]  # weights and their pinned copy
    events = {"u1": object()}
    loader = NS(lora_to_overlap_load_event=events, lora_manager=NS(lora_refs=REFS))
    time.sleep(0.01)
    memory_pool.drain_completed_overlap_loads(lambda self: events.clear(), loader)
    [copied] = _of(emitted, ev.SlotCopied)
    assert copied.lora_name == "qa" and copied.seconds >= 0.01
    pool.uid_to_buffer_id.pop(None)
    memory_pool.load_lora_weight_to_buffer(lambda *a, **k: None, pool, None)  # in line: the base model's slot
    _prepare(pool, {"u1", None}, REFS, {"u1": adapter})
    assert len([e for e in _of(emitted, ev.Residency) if e.tier == "host"]) == 1  # the pinned copy, once
    assert [e.seconds is not None for e in _of(emitted, ev.SlotLoaded)] == [False, True]


def test_a_slot_load_is_charged_to_its_request_when_the_next_batch_took_the_slot(emitted, monkeypatch):
    """The overlap scheduler runs batch N+1 before it reads batch N's results; N+1 may evict the
    adapter N loaded for its request (which then waits in the running batch for its next slot)."""
    rank_state.set_reporting_rank(True)
    pool = _pool({None: 0})
    sched = _scheduler(pool, REFS)
    sched.disaggregation_mode = NS(value="null")
    stats = NS(trace_ctx=None, wait_queue_entry_time=1.0, forward_entry_time=2.0, prefill_finished_time=3.0)
    batch = NS(reqs=[NS(rid="r1", lora_id="u1", time_stats=stats)], forward_mode=Mode("extend"))
    scheduler.run_batch(sched, batch)
    memory_pool.load_lora_weight_to_buffer(lambda *a, **k: time.sleep(0.002), pool, "u1")
    _prepare(pool, {"u1"}, REFS)

    def take_its_slot(self, cur_uids, **kwargs):
        self.uid_to_buffer_id["u2"] = self.uid_to_buffer_id.pop("u1")

    memory_pool.prepare_lora_batch(take_its_slot, pool, {"u2"}, lora_adapters={}, lora_modules=[], lora_refs=REFS)
    scheduler.process_batch_result(None, sched, batch)
    [phases] = _of(emitted, ev.RequestPhases)
    assert phases.gpu_hit is False and phases.slot_load_s >= 0.002


def test_an_unloaded_adapter_leaves_no_slot_load_behind(emitted):
    rank_state.set_reporting_rank(True)
    ref = NS(lora_id="u9", lora_name="gone", pinned=False)
    memory_pool.last_slot_load_s["u9"] = 0.1
    manager = NS(lora_refs={"u9": ref}, memory_pool=_pool({None: 0}))
    lora_manager.unload_lora_adapter(lambda self, r: NS(success=True), manager, ref)
    assert "u9" not in memory_pool.last_slot_load_s


def test_a_request_running_at_the_flush_counts_as_running_though_it_finishes_before_the_publisher(monkeypatch):
    """Whether a request is done is read on the scheduler's thread at the flush, not when the
    publisher gets to it: a request of a few tokens has finished by then."""
    rank_state.set_reporting_rank(True)
    emitted, deferred = [], []
    monkeypatch.setattr(runtime, "emit", emitted.append)
    monkeypatch.setattr(runtime, "defer", deferred.append)
    scheduler._state["last_flush"] = 0.0
    running = [NS(rid="a", lora_id="u1", time_stats=None, finished_reason=None)]
    sched = _scheduler(_pool({None: 0, "u1": 1}), REFS, running=running)
    scheduler.run_batch(sched, NS(reqs=running, forward_mode=Mode("decode")))
    running[0].finished_reason = "length"  # finished before the publisher thread counts
    for work in deferred:
        work()
    [state] = _of(emitted, ev.RoutingState)
    assert state.running == {REFS["u1"].lora_name: 1}
    rank_state._reporting.clear()


def test_a_request_sent_back_to_the_queue_is_counted_and_keeps_the_phases_of_its_first_scheduling(monkeypatch):
    """Retraction and priority preemption re-queue a running request, and SGLang stamps its queue entry
    again (SchedulerReqTimeStats.set_wait_queue_entry_time), possibly before the publisher thread reads
    its phases: the queue phase still runs from its first entry. A refusal or a batch after the re-queue
    is no second deferral, lookup or phase report."""
    from sglang.srt.observability.req_time_stats import SchedulerReqTimeStats

    rank_state.set_reporting_rank(True)
    emitted, deferred = [], []
    monkeypatch.setattr(runtime, "emit", emitted.append)
    monkeypatch.setattr(runtime, "defer", deferred.append)
    stats = SchedulerReqTimeStats()
    stats.set_wait_queue_entry_time()
    queued = stats.wait_queue_entry_time
    time.sleep(0.01)
    stats.set_forward_entry_time()
    req = NS(rid="r1", lora_id="u1", time_stats=stats, finished_reason=None)
    sched = _scheduler(_pool({None: 0, "u1": 1}), REFS)
    sched.disaggregation_mode = NS(value="null")
    batch = NS(reqs=[req], forward_mode=Mode("extend"))
    scheduler.run_batch(sched, batch)
    stats.set_prefill_finished_time()
    scheduler.process_batch_result(None, sched, batch)  # its phases wait for the publisher thread
    scheduler.add_request_to_queue(sched, req, is_retracted=True)  # retracted first ...
    stats.set_wait_queue_entry_time()
    assert stats.wait_queue_entry_time > stats.forward_entry_time
    scheduler.add_request_to_queue(sched, req)  # ... and preempted after it came back
    assert not scheduler.can_schedule_lora_req(lambda *args: False, sched, req, set())
    scheduler.run_batch(sched, batch)
    for work in deferred:
        work()
    [phases] = _of(emitted, ev.RequestPhases)
    assert phases.queued == queued
    assert phases.phases()["queue"] == pytest.approx(stats.forward_entry_time - queued) and phases.phases()["queue"] > 0
    assert [(e.lora_name, e.reason) for e in _of(emitted, ev.RequestRequeued)] == [("qa", "retract"), ("qa", "preempt")]
    assert len(_of(emitted, ev.CacheLookup)) == 1 and not _of(emitted, ev.AdmissionDeferred)


def test_a_request_arriving_is_not_a_requeue(emitted):
    rank_state.set_reporting_rank(True)
    scheduler.add_request_to_queue(_scheduler(_pool({None: 0}), REFS), NS(rid="r1", lora_id="u1"))
    assert emitted == []


def test_dp_attentions_union_pool_is_counted_once_and_held_by_every_rank(emitted):
    """With DP attention every DP rank loads the union of all ranks' batch adapters into its own pool
    (sglang/srt/lora/lora_manager.py, prepare_lora_batch): two ranks whose batches hold qa and sql
    each copy both. Counted at DP rank 0 only, held (bytes) by both."""
    for rank in (0, 1):
        rank_state.set_reporting_rank(True)  # attention-TP rank 0 of its DP rank: it counts its requests
        rank_state.set_pool_shared(rank != 0)
        _prepare(_pool({None: 0}), {None, "u1", "u2"}, REFS)
    assert sorted(e.lora_name for e in _of(emitted, ev.SlotLoaded)) == ["qa", "sql"]
    gpu = [e for e in _of(emitted, ev.Residency) if e.tier == "gpu" and e.lora_name != ev.BASE]
    assert sorted((e.lora_name, e.memory_only) for e in gpu) == [("qa", False), ("qa", True), ("sql", False),
                                                                 ("sql", True)]
    assert [e.memory_only for e in _of(emitted, ev.PoolState)] == [False, True]


def test_a_union_of_adapters_larger_than_the_pool_is_reported_before_sglang_stops(emitted):
    manager = NS(max_loras_per_batch=4)

    def sglang_raises(self, batch):
        raise ValueError("The global DP-attention batch contains more LoRA adapters than the memory pool can hold")

    with pytest.raises(ValueError, match="more LoRA adapters"):
        lora_manager.prepare_lora_batch(sglang_raises, manager, NS(lora_ids=["u1", "u2", "u1", None]))
    [overflow] = _of(emitted, ev.PoolOverflow)
    assert (overflow.local_adapters, overflow.slots) == (3, 4) and "memory pool" in overflow.error

    def another_error(self, batch):
        raise ValueError("something else")

    with pytest.raises(ValueError, match="something else"):
        lora_manager.prepare_lora_batch(another_error, manager, NS(lora_ids=["u1"]))
    assert len(_of(emitted, ev.PoolOverflow)) == 1


def _waiting(lora_id: str, waited_s: float = 0.0, max_new_tokens: int = 8, outputs: int = 0) -> NS:
    """A request as SGLang's drainer reads it (it measures waits with time.monotonic)."""
    return NS(rid=f"r-{lora_id}", lora_id=lora_id, time_stats=NS(wait_queue_entry_time=time.monotonic() - waited_s),
              sampling_params=NS(max_new_tokens=max_new_tokens), output_ids=[0] * outputs, finished_reason=None)


def test_drain_episodes_of_sglangs_own_drainer_are_started_and_ended_with_their_length(emitted):
    """SGLang's LoRADrainer, in process: qa and sql hold both slots, chat waited past the threshold,
    so qa (fewest tokens left) drains for chat; once qa's requests are done the drain ends."""
    from sglang.srt.lora.lora_drainer import LoRADrainer

    rank_state.set_reporting_rank(True)
    refs = {**REFS, "u3": NS(lora_name="chat", pinned=False)}
    drainer = LoRADrainer(max_loras_per_batch=2, max_wait_time_secs=0.5)
    sched = NS(lora_drainer=drainer, tp_worker=NS(model_runner=NS(lora_manager=NS(lora_refs=refs))))
    drainer_hooks.scheduler_init(None, sched)
    running = [_waiting("u1", max_new_tokens=8, outputs=4), _waiting("u2", max_new_tokens=64)]
    waiting = [_waiting("u3", waited_s=1.0)]
    for _ in range(3):  # further passes while it drains start nothing new
        drainer.update_draining_state(waiting, running)
        drainer_hooks.update_draining_state(None, drainer)
    [started] = _of(emitted, ev.DrainStarted)
    assert (started.lora_name, started.draining_for) == ("qa", "chat") and not _of(emitted, ev.DrainEnded)
    time.sleep(0.02)
    drainer.update_draining_state(waiting, running[1:])  # qa's request is done
    drainer_hooks.update_draining_state(None, drainer)
    [ended] = _of(emitted, ev.DrainEnded)
    assert (ended.lora_name, ended.draining_for) == ("qa", "chat") and ended.seconds >= 0.02


def test_a_request_refused_for_a_slot_and_then_held_by_a_drain_is_counted_under_both(emitted):
    rank_state.set_reporting_rank(True)
    holding = [False]
    drainer = NS(can_schedule=lambda req: not holding[0])
    sched = _scheduler(_pool({None: 0}), REFS, drainer=drainer)
    req = _waiting("u1")
    for hold in (False, False, True, True):
        holding[0] = hold
        assert not scheduler.can_schedule_lora_req(lambda *args: False, sched, req, set())
    assert [e.reason for e in _of(emitted, ev.AdmissionDeferred)] == ["slot", "drain"]


def _dp_attention_manager(monkeypatch, gathered: list[list]) -> tuple:
    """SGLang's own LoRAManager.prepare_lora_batch on a manager stand-in: attention DP on, the all-gather
    of every rank's batch adapter ids answered with ``gathered``, the pool ours (a hooked stand-in)."""
    from sglang.srt.lora import lora_manager as sglang_manager

    monkeypatch.setattr(sglang_manager, "get_forward", lambda: NS(set=lambda *args: None))
    monkeypatch.setattr(sglang_manager, "get_parallel", lambda: NS(tp_group=NS(all_gather_object=lambda ids: gathered)))
    pool = _pool({None: 0})
    pool.get_buffer_id = pool.uid_to_buffer_id.__getitem__

    def fill(self, cur_uids, **kwargs):  # SGLang's slot filling, as far as the counts need it
        for uid in cur_uids:
            if uid not in self.uid_to_buffer_id:
                self.uid_to_buffer_id[uid] = len(self.uid_to_buffer_id)

    pool.prepare_lora_batch = lambda **kwargs: memory_pool.prepare_lora_batch(
        fill, pool, kwargs.pop("cur_uids"), **kwargs)
    manager = sglang_manager.LoRAManager.__new__(sglang_manager.LoRAManager)
    manager.__dict__.update(
        attn_dp_enabled=True, max_loras_per_batch=4, num_pinned_loras=0, memory_pool=pool, lora_refs=REFS,
        loras={uid: NS(config=NS(r=8), scaling=1.0) for uid in REFS}, lora_modules=[], embed_tokens_module=None,
        lm_head_module=None,
        lora_backend=NS(skip_inactive_lora_batches=False, prefill_cuda_graph_max_bs=None,
                        prefill_cuda_graph_max_tokens=None, prepare_lora_batch=lambda *args, **kwargs: None,
                        prepare_global_lora_batch=lambda batch: None, batch_info=NS(has_active_lora=False)))
    return sglang_manager.LoRAManager.prepare_lora_batch, manager


def _forward_batch(lora_ids: list) -> NS:
    mode = NS(is_extend=lambda: True, is_cuda_graph=lambda: False, is_idle=lambda: False)
    return NS(lora_ids=lora_ids, batch_size=len(lora_ids), forward_mode=mode)


def test_sglangs_own_union_pool_under_dp_attention_is_counted_once(emitted, monkeypatch):
    """Each DP rank runs SGLang's prepare_lora_batch on its own batch (qa on rank 0, sql on rank 1); SGLang
    loads the gathered union into both pools. The two copies of each are one logical slot load."""
    for rank, ids in ((0, ["u1"]), (1, ["u2"])):
        rank_state.set_reporting_rank(True)
        rank_state.set_pool_shared(rank != 0)
        prepare, manager = _dp_attention_manager(monkeypatch, [["u1"], ["u2"]])
        lora_manager.prepare_lora_batch(prepare, manager, _forward_batch(ids))
        assert set(manager.memory_pool.uid_to_buffer_id) == {None, "u1", "u2"}  # the union, on every rank
    assert sorted(e.lora_name for e in _of(emitted, ev.SlotLoaded)) == ["qa", "sql"]


def test_sglangs_own_union_overflow_is_reported_before_its_error_goes_on(emitted, monkeypatch):
    rank_state.set_reporting_rank(True)
    refs = {f"u{i}": NS(lora_name=f"a{i}", pinned=False) for i in range(1, 6)}
    prepare, manager = _dp_attention_manager(monkeypatch, [["u1", "u2", "u3"], ["u4", "u5"]])
    manager.lora_refs = refs
    with pytest.raises(ValueError, match="more LoRA adapters than the memory pool can hold"):
        lora_manager.prepare_lora_batch(prepare, manager, _forward_batch(["u1", "u2", "u3"]))
    [overflow] = _of(emitted, ev.PoolOverflow)
    assert (overflow.local_adapters, overflow.slots) == (3, 4)
    assert not _of(emitted, ev.SlotLoaded)
