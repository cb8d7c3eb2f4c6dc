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

With DP attention the pools are not each rank's own: SGLang all-gathers every rank's batch
adapters and loads the union into every rank's pool (``LoRAManager.prepare_lora_batch``), so the
D pools are one pool held D times, in the same order on every rank. Its slot loads, evictions
and slots are counted by DP rank 0 alone (:func:`counts_the_pool`); each rank still counts its
own requests, lookups and queue.
"""

from __future__ import annotations

from lora_telemetry import runtime

_reporting: list[bool] = []
_pool_shared: list[bool] = []  # DP attention, on a DP rank other than 0: the pool is counted at rank 0


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


def counts_the_pool() -> bool:
    """True where this process counts its pool's slot loads, evictions and slots: the reporting
    scheduler, but with DP attention (the union pool, see above) only DP rank 0's."""
    if not reporting_rank():
        return False
    if not _pool_shared:
        try:
            from sglang.srt.runtime_context import get_parallel

            parallel = get_parallel()
            shared = getattr(parallel, "attn_dp_size", 1) > 1 and getattr(parallel, "attn_dp_rank", 0) != 0
        except Exception:
            return True  # not published yet: count, do not remember
        _pool_shared.append(shared)
    return not _pool_shared[0]


def set_pool_shared(value: bool) -> None:
    """State whether another DP-attention rank counts this process's pool, where SGLang publishes nothing."""
    _pool_shared[:] = [value]
