"""The workload model: distributions with a fixed seed, reproducibility, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lora_telemetry.bench.workload import Workload, WorkloadError, parse_range, schedule


def test_same_seed_same_schedule_other_seed_other_schedule():
    workload = Workload(adapters=5, rate=20, duration=10, seed=7)
    assert schedule(workload) == schedule(Workload(adapters=5, rate=20, duration=10, seed=7))
    assert schedule(workload) != schedule(Workload(adapters=5, rate=20, duration=10, seed=8))


def test_inter_arrival_times_are_gamma_with_the_given_rate_and_cv():
    workload = Workload(rate=10, cv=2.0, requests=5000, seed=1)
    gaps = np.diff([r.send_at for r in schedule(workload)])
    shape = 1 / 2.0**2
    assert stats.kstest(gaps, "gamma", args=(shape, 0, 1 / (10 * shape))).pvalue > 0.01
    assert gaps.mean() == pytest.approx(0.1, rel=0.1)
    assert gaps.std() / gaps.mean() == pytest.approx(2.0, rel=0.1)


def test_adapter_popularity_follows_the_power_law():
    workload = Workload(adapters=6, alpha=1.2, requests=6000, seed=2)
    counts = np.bincount([r.adapter for r in schedule(workload)], minlength=6)
    expected = workload.popularity() * 6000
    assert stats.chisquare(counts, expected).pvalue > 0.01
    assert list(counts) == sorted(counts, reverse=True)


def test_lengths_are_uniform_in_their_closed_ranges():
    requests = schedule(Workload(requests=4000, prompt_len=(5, 9), output_len=(3, 3), seed=3))
    prompts = np.bincount([r.prompt_tokens for r in requests])[5:]
    assert len(prompts) == 5 and stats.chisquare(prompts).pvalue > 0.01
    assert {r.output_tokens for r in requests} == {3}


def test_duration_bounds_the_send_times():
    requests = schedule(Workload(rate=50, duration=4, seed=4))
    assert requests[0].send_at == 0 and max(r.send_at for r in requests) < 4
    assert len(requests) == pytest.approx(200, rel=0.25)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"adapters": 0}, "--adapters"), ({"alpha": -1}, "--alpha"), ({"rate": 0}, "--rate"), ({"cv": 0}, "--cv"),
    ({"requests": None}, "exactly one"), ({"duration": 5.0}, "exactly one"), ({"prompt_len": (9, 5)}, "--prompt-len"),
    ({"output_len": (0, 5)}, "--output-len"),
])
def test_bad_parameters_get_a_clear_error(kwargs, message):
    with pytest.raises(WorkloadError, match=message):
        Workload(**{"requests": 10, **kwargs})


def test_ranges_parse_or_say_what_is_expected():
    assert parse_range("8:64", "--prompt-len") == (8, 64)
    with pytest.raises(WorkloadError, match="--prompt-len must be MIN:MAX"):
        parse_range("8-64", "--prompt-len")
