"""The busiest adapters keep their own costly series; a newcomer replaces one only when clearly busier."""

from __future__ import annotations

from lora_telemetry import events as ev
from lora_telemetry.sinks.prometheus import PrometheusSink
from lora_telemetry.sinks.prometheus.busiest import PERIOD_S, BusiestAdapters
from lora_telemetry.sinks.prometheus.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _period(busiest: BusiestAdapters, clock: Clock, requests: dict[str, int]) -> list[str]:
    """One period's requests; the last one closes the period and re-ranks."""
    replaced: list[str] = []
    for name, count in requests.items():
        for _ in range(count):
            replaced += busiest.served(name)
    clock.now += PERIOD_S
    return replaced + busiest.served(next(iter(requests)))


def test_the_first_k_adapters_get_in_and_the_next_is_other():
    busiest = BusiestAdapters(2)
    assert [busiest.label(n) for n in ("a", "b", "c", "a")] == ["a", "b", ev.OTHER, "a"]
    assert busiest.label(ev.OTHER) == ev.OTHER and busiest.members == {"a", "b"}


def test_an_outsider_replaces_the_quietest_member_only_when_more_than_twice_as_busy():
    clock = Clock()
    busiest = BusiestAdapters(2, clock)
    busiest.label("a"), busiest.label("b")
    assert _period(busiest, clock, {"a": 10, "b": 5, "c": 9}) == []  # 9 is not more than twice 5
    assert _period(busiest, clock, {"a": 10, "b": 5, "c": 9}) == []  # scores 15, 7.5, 13.5: the same
    assert _period(busiest, clock, {"a": 10, "b": 1, "c": 9}) == ["b"]  # 17.5 and 4.75: c replaces b
    assert busiest.members == {"a", "c"}
    # b back at its old pace does not flip the set back: hysteresis
    for _ in range(5):
        assert _period(busiest, clock, {"a": 10, "b": 5, "c": 9}) == []
    assert busiest.members == {"a", "c"}


def test_a_replaced_adapters_series_go_into_other_with_its_later_observations():
    clock = Clock()
    store = Store()
    sink = PrometheusSink(store, 100, BusiestAdapters(2, clock))

    def request(name: str, finish: bool = True) -> None:
        sink.record(ev.RequestAdmitted(name))
        if finish:
            sink.record(ev.RequestFinished(name, "finished", 3, 4, 0.05, 0.2))

    for name in ("a", "a", "a", "b"):
        request(name)
    request("b", finish=False)  # in flight while b is replaced
    for _ in range(6):
        request("c")
    clock.now += PERIOD_S
    request("c")  # closes the period: c (7) is busier than twice b (1), not than twice a (3)
    ttft = store.values["sglang_lora_time_to_first_token_seconds"]
    assert {labels[0] for labels in ttft} == {"a", ev.OTHER}  # b's series dropped; c's requests so far in __other__
    request("c")
    assert {labels[0] for labels in ttft} == {"a", "c", ev.OTHER}
    observed = {labels[0]: sum(counts[:-1]) for labels, counts in ttft.items()}  # buckets, not the sum
    assert observed == {"a": 3, ev.OTHER: 8, "c": 1}  # all 12 finished: b's one carried into __other__
    assert store.values["sglang_lora_requests_in_flight"].get((ev.OTHER,)) == 1  # b's running request moved
    sink.record(ev.RequestFinished("b", "finished", 3, 4, 0.05, 0.2))
    assert store.values["sglang_lora_requests_in_flight"][(ev.OTHER,)] == 0
    assert store.get("sglang_lora_requests_total", ("b", "finished")) == 2  # the budget's series stay exact


def test_a_follower_lets_adapters_in_until_it_knows_k_then_takes_the_leaders_set():
    store = Store()
    sink = PrometheusSink(store, 100, BusiestAdapters(2, leader=False))
    for name in ("x", "y", "z"):
        sink.record(ev.AdmissionWaited(name, 0.01))
    waits = store.values["sglang_lora_admission_wait_seconds"]
    assert {labels[0] for labels in waits} == {"x", "y", ev.OTHER}  # the first two at once
    sink.follow(["y"])  # the leader knows one: the follower keeps one of its own beside it
    assert sink.busiest.members == {"x", "y"}
    sink.follow(["z", "y"])
    assert sink.busiest.members == {"y", "z"} and {labels[0] for labels in waits} == {"y", ev.OTHER}
    assert sink.busiest.served("z") == [] and sink.busiest.requests == {}  # a follower never ranks


def test_a_series_written_back_by_a_racing_thread_after_a_drop_is_swept_into_other_once_settled():
    store = Store()
    sink = PrometheusSink(store, 100, BusiestAdapters(1, leader=False))
    sink.record(ev.AdmissionWaited("x", 0.01))
    sink.follow(["y"])
    store.observe("sglang_lora_admission_wait_seconds", ("x",), 0.02)  # named "x" just before the drop
    sink.settle()
    waits = store.values["sglang_lora_admission_wait_seconds"]
    assert {labels[0] for labels in waits} == {ev.OTHER} and sum(waits[(ev.OTHER,)][:-1]) == 2  # both kept
    sink.record(ev.AdmissionWaited("y", 0.01))
    sink.settle(), sink.settle()
    assert {labels[0] for labels in waits} == {"y", ev.OTHER}
