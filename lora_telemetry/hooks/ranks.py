"""Where a scheduler process sits in SGLang's parallel layout, read from SGLang's published state.

Read lazily (SGLang publishes it after plugins load) and remembered once published; the
ranks are handed to the runtime, which labels snapshots and log lines with them.

Two roles. The *reporting* scheduler of a DP replica counts what happens there: requests,
lookups, slot loads, evictions. It is chosen as SGLang chooses the scheduler that reports
SGLang's own metrics: attention-TP rank 0, attention-CP rank 0, PP rank 0. With DP attention
every DP rank is such a scheduler, with its own queue, its own pool and its own ``dp_rank``.
Every other rank (TP and PP ranks of the same replica) holds its own host copy of each
adapter and its own share of the pool, so it reports *memory only*: the bytes it holds, which
the exposition adds up over processes.
"""

from __future__ import annotations

from lora_telemetry import runtime

_reporting: list[bool] = []


def set_reporting_rank(value: bool) -> None:
    """State this process's role where SGLang publishes none (benchmarks, tests)."""
    _reporting[:] = [value]


def reporting_rank() -> bool:
    """True in the one scheduler process per DP replica (or per DP-attention rank) that counts."""
    if _reporting:
        return _reporting[0]
    try:
        from sglang.srt.runtime_context import get_parallel

        parallel = get_parallel()
        tp_rank = parallel.tp_rank
        pp_rank = getattr(parallel, "pp_rank", 0)
        attn_tp_rank = getattr(parallel, "attn_tp_rank", tp_rank)
        attn_cp_rank = getattr(parallel, "attn_cp_rank", 0)
        dp_rank = parallel.dp_rank if parallel.dp_rank is not None else getattr(parallel, "attn_dp_rank", 0)
    except Exception:
        return True  # not published yet (or not an SGLang process): report, do not remember
    runtime.set_ranks(dp_rank=dp_rank or 0, tp_rank=tp_rank, pp_rank=pp_rank or 0)
    _reporting.append(attn_tp_rank == 0 and attn_cp_rank == 0 and (pp_rank or 0) == 0)
    return _reporting[0]
