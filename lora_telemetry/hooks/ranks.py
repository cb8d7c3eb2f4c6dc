"""Where a scheduler process sits in SGLang's parallel layout, read from SGLang's published state.

Read lazily (SGLang publishes it after plugins load) and remembered once published; the
ranks are handed to the runtime, which labels snapshots and log lines with them.
"""

from __future__ import annotations

from lora_telemetry import runtime

_reporting: list[bool] = []


def set_reporting_rank(value: bool) -> None:
    """State this process's role where SGLang publishes none (benchmarks, tests)."""
    _reporting[:] = [value]


def reporting_rank() -> bool:
    """True in the one scheduler process per DP replica that reports (TP rank 0, PP rank 0)."""
    if _reporting:
        return _reporting[0]
    try:
        from sglang.srt.runtime_context import get_parallel

        parallel = get_parallel()
        dp_rank, tp_rank, pp_rank = parallel.dp_rank, parallel.tp_rank, getattr(parallel, "pp_rank", 0)
    except Exception:
        return True  # not published yet (or not an SGLang process): report, do not remember
    runtime.set_ranks(dp_rank=dp_rank or 0, tp_rank=tp_rank)
    _reporting.append(tp_rank == 0 and pp_rank == 0)
    return _reporting[0]
