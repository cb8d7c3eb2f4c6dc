"""The eviction ledger: reuse times and thrash reloads from eviction and slot-load times."""

from lora_telemetry.forensics import EvictionLedger, Reuse


def test_a_reload_is_a_reuse_after_its_last_eviction_and_thrash_within_the_window():
    ledger = EvictionLedger(window_s=10.0)
    assert ledger.loaded("qa", 1.0) is None  # never evicted: a first load
    ledger.evicted("qa", 5.0)
    ledger.evicted("qa", 7.0)  # evicted again (reloaded by nobody meanwhile): the last eviction counts
    assert ledger.loaded("qa", 9.5) == Reuse(2.5, True)
    assert ledger.loaded("qa", 30.0) is None  # the reuse was taken
    ledger.evicted("qa", 31.0)
    assert ledger.loaded("qa", 41.0) == Reuse(10.0, True)  # the window includes its end
    ledger.evicted("qa", 50.0)
    assert ledger.loaded("qa", 60.5) == Reuse(10.5, False)


def test_adapters_are_kept_apart():
    ledger = EvictionLedger(window_s=1.0)
    ledger.evicted("qa", 0.0)
    ledger.evicted("sql", 5.0)
    assert ledger.loaded("sql", 5.5) == Reuse(0.5, True)
    assert ledger.loaded("qa", 5.5) == Reuse(5.5, False)
