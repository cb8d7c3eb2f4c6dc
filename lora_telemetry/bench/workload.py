"""S-LoRA's workload model: which adapter each request asks for, when it is sent, how long it is.

Adapter popularity follows a power law (the i-th adapter is asked for in proportion to
``(i + 1) ** -alpha``); inter-arrival times are Gamma-distributed with mean ``1 / rate`` and
coefficient of variation ``cv`` (``cv = 1`` is a Poisson process, larger is burstier);
prompt and output lengths are uniform in closed ranges. The same seed gives the same
schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class WorkloadError(ValueError):
    """A workload parameter is out of range; the message names the flag."""


@dataclass(frozen=True)
class Workload:
    adapters: int = 8
    alpha: float = 1.0
    rate: float = 4.0  # requests per second
    cv: float = 1.0
    duration: float | None = None  # seconds of sending, or a fixed number of requests
    requests: int | None = None
    prompt_len: tuple[int, int] = (8, 64)
    output_len: tuple[int, int] = (8, 32)
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.adapters >= 1, f"--adapters must be at least 1, got {self.adapters}"),
            (self.alpha >= 0, f"--alpha must be 0 or more, got {self.alpha}"),
            (self.rate > 0, f"--rate must be above 0 requests/s, got {self.rate}"),
            (self.cv > 0, f"--cv must be above 0, got {self.cv}"),
            ((self.duration is None) != (self.requests is None), "give exactly one of --duration and --requests"),
            (self.duration is None or self.duration > 0, f"--duration must be above 0, got {self.duration}"),
            (self.requests is None or self.requests >= 1, f"--requests must be at least 1, got {self.requests}"),
        ]
        for name, (low, high) in (("--prompt-len", self.prompt_len), ("--output-len", self.output_len)):
            checks.append((1 <= low <= high, f"{name} must be MIN:MAX with 1 <= MIN <= MAX, got {low}:{high}"))
        for ok, message in checks:
            if not ok:
                raise WorkloadError(message)

    def popularity(self) -> np.ndarray:
        weights = (np.arange(self.adapters) + 1.0) ** -self.alpha
        return weights / weights.sum()


@dataclass(frozen=True)
class Request:
    index: int
    send_at: float  # seconds after the start
    adapter: int  # index into the adapter names; popularity falls with the index
    prompt_tokens: int
    output_tokens: int


def parse_range(text: str, flag: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in text.split(":"))
    except ValueError:
        raise WorkloadError(f"{flag} must be MIN:MAX, e.g. 8:64, got {text!r}") from None
    return low, high


def schedule(workload: Workload) -> list[Request]:
    rng = np.random.default_rng(workload.seed)
    shape = 1.0 / workload.cv**2
    scale = 1.0 / (workload.rate * shape)
    if workload.requests is not None:
        gaps = rng.gamma(shape, scale, workload.requests)
    else:
        expected = int(workload.duration * workload.rate * 1.5) + 16
        gaps = rng.gamma(shape, scale, expected)
        while gaps.sum() < workload.duration:
            gaps = np.concatenate([gaps, rng.gamma(shape, scale, expected)])
    send_at = np.cumsum(gaps) - gaps[0]  # the first request goes at once
    if workload.duration is not None:
        send_at = send_at[send_at < workload.duration]
    count = len(send_at)
    adapters = rng.choice(workload.adapters, size=count, p=workload.popularity())
    prompts = rng.integers(workload.prompt_len[0], workload.prompt_len[1] + 1, count)
    outputs = rng.integers(workload.output_len[0], workload.output_len[1] + 1, count)
    return [Request(i, float(send_at[i]), int(adapters[i]), int(prompts[i]), int(outputs[i]))
            for i in range(count)]
