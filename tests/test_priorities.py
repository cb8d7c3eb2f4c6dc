"""The priority eviction rule: lowest priority first, LRU within a priority, lifted by waiting
requests, the base model last; the same rule in SGLang's pool and in the simulator."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from lora_telemetry.capacity.simulator import PoolSimulator
from lora_telemetry.hooks.eviction import running_adapters, waiting_priorities
from lora_telemetry.priorities import LIMIT, PriorityError, PriorityEvictionPolicy, check_priorities, pick_victim

REFS = {f"u{i}": NS(lora_name=name) for i, name in enumerate(["qa", "sql", "chat", "code"])}


def _policy(priorities: dict, used: list[str], waiting: list | None = None,
            low_first: bool = False, running: list | None = None) -> PriorityEvictionPolicy:
    """The policy wired as the hook wires it: names from SGLang's refs, lifts from its waiting queue,
    protection from its running batch."""
    waiting = [] if waiting is None else waiting
    policy = PriorityEvictionPolicy(priorities)
    scheduler = NS(waiting_queue=waiting, schedule_low_priority_values_first=low_first,
                   running_batch=NS(reqs=running or []))
    policy.name_of = lambda uid: getattr(REFS.get(uid), "lora_name", None)
    policy.lifted = lambda: waiting_priorities(scheduler)
    policy.running = lambda: running_adapters(scheduler)
    for uid in used:
        policy.mark_used(uid)
    return policy


def test_the_lowest_priority_goes_first_whatever_its_recency():
    policy = _policy({"qa": 5, "sql": 1}, ["u2", "u0", "u1"])  # chat least recent, then qa, then sql
    assert policy.select_victim({"u0", "u1", "u2"}) == "u2"  # chat: default 0
    assert policy.select_victim({"u0", "u1"}) == "u1"  # sql (1) before qa (5), though qa is older


def test_within_a_priority_the_least_recently_used_goes_first():
    policy = _policy({"qa": 2, "sql": 2}, ["u0", "u1", "u0"])
    assert policy.select_victim({"u0", "u1"}) == "u1"
    policy.remove("u1")
    assert policy.select_victim({"u0", "u1"}) == "u1"  # untracked counts as oldest, never an error


def test_a_waiting_request_lifts_its_adapter_while_it_waits():
    waiting = [NS(lora_id="u2", priority=9), NS(lora_id="u3", priority=None), NS(lora_id=None, priority=50)]
    policy = _policy({"qa": 5}, ["u2", "u0"], waiting)
    assert policy.select_victim({"u0", "u2"}) == "u0"  # chat lifted to 9 above qa's 5
    waiting.clear()  # the request was scheduled
    assert policy.select_victim({"u0", "u2"}) == "u2"


def test_with_low_values_first_a_small_request_priority_lifts():
    waiting = [NS(lora_id="u2", priority=-9)]
    assert _policy({"qa": 5}, ["u2", "u0"], waiting, low_first=True).select_victim({"u0", "u2"}) == "u0"
    assert _policy({"qa": 5}, ["u2", "u0"], waiting, low_first=False).select_victim({"u0", "u2"}) == "u2"


def test_the_base_model_only_when_it_is_the_sole_candidate():
    policy = _policy({}, ["u0"])
    assert policy.select_victim({None, "u0"}) == "u0"
    assert policy.select_victim({None}) is None


def test_an_unreadable_scheduler_leaves_the_adapters_own_priorities():
    policy = _policy({"qa": 5}, ["u0", "u1"])
    policy.lifted = lambda: waiting_priorities(object())
    assert policy.select_victim({"u0", "u1"}) == "u1"


def test_pick_victim_agrees_with_lru_when_all_priorities_are_equal():
    order = ["a", "b", "c"]
    assert pick_victim(order, {"b", "c"}, lambda _name: 0) == "b"


@pytest.mark.parametrize(("priorities", "problem"), [
    ({"qa": "high"}, "is not an integer"), ({"qa": True}, "is not an integer"), ({"qa": 1.5}, "is not an integer"),
    ({"a/b": 1}, "path separator"), ({"qa": LIMIT + 1}, "outside"), (["qa"], "expected a mapping"),
])
def test_bad_priorities_are_refused_with_the_adapter_named(priorities, problem):
    with pytest.raises(PriorityError, match=problem):
        check_priorities(priorities)


def test_the_simulator_evicts_by_priority_like_the_policy():
    """Four adapters through three slots (one is the base model's): qa, raised, stays resident."""
    lru, ranked = PoolSimulator(3), PoolSimulator(3, priorities={"qa": 1})
    for pool in (lru, ranked):
        pool.batch(("__base__",), (0,))
        for name in ["qa", "sql", "chat", "sql", "code", "qa"]:
            pool.batch((name,), (1,))
    assert lru.evictions["qa"] == 1 and lru.misses["qa"] == 2
    assert ranked.evictions["qa"] == 0 and ranked.hits["qa"] == 1


def _decoding(lora_id: str | None, finished: bool = False) -> NS:
    return NS(lora_id=lora_id, finished_reason="length" if finished else None)


def test_an_adapter_still_decoding_goes_only_when_no_other_candidate_is_left():
    """qa (priority 0) decodes in the running batch while a prefill batch needs a slot: sql (priority 5)
    goes instead; when every candidate decodes, priority decides again; the base model is a candidate."""
    running = [_decoding("u0"), _decoding("u2", finished=True)]
    assert _policy({"sql": 5}, ["u0", "u1"], running=running).select_victim({"u0", "u1"}) == "u1"
    assert _policy({"sql": 5}, ["u0", "u1"], running=running).select_victim({"u0", "u2"}) == "u2"  # finished
    assert _policy({"sql": 5}, ["u0", "u1"], running=[_decoding("u0"), _decoding("u1")]).select_victim(
        {"u0", "u1"}) == "u0"
    assert _policy({}, ["u0"], running=running).select_victim({None, "u0"}) is None


def test_without_a_running_batch_nothing_is_protected():
    policy = _policy({"sql": 5}, ["u0", "u1"])
    policy.running = lambda: running_adapters(NS(running_batch=None))
    assert policy.select_victim({"u0", "u1"}) == "u0"


def test_the_simulator_keeps_a_decoding_adapter_like_the_policy_and_counts_the_reload_lru_makes():
    """legal (priority 0) decodes while code's prefill needs a slot beside idle qa (5): by priority alone
    legal would go and its next decode step copy it back; kept as running, qa goes instead. SGLang's
    FIFO takes legal, and the decode step's copy is a reload (a load no new request asked for). The
    live server does the same (tests/hooks/test_eviction.py)."""
    trace = [(("__base__",), (0,)), (("legal",), (1,)), (("legal",), (0,)), ("legal",), (("qa",), (1,)),
             (("legal",), (0,)), ("legal",), (("code",), (1,)), (("legal",), (0,))]  # 1-tuples: D records
    ranked, fifo = PoolSimulator(3, priorities={"qa": 5, "code": 5}), PoolSimulator(3, "fifo")
    for pool in (ranked, fifo):
        for step in trace:
            if len(step) == 1:
                pool.decoding(step)  # the running batch before a prefill batch
            else:
                pool.batch(*step)
    assert ranked.evictions == {"qa": 1} and not ranked.reloads
    assert fifo.evictions == {"legal": 1, "qa": 1} and fifo.reloads == {"legal": 1}  # the reload takes qa's slot
    assert fifo.slot_loads["legal"] == 2 and ranked.slot_loads["legal"] == 1
