"""Pure-torch stand-in for the ``sgl_kernel`` CPU ops SGLang imports on a CPU.

Test bed only. SGLang's CPU engine (``SGLANG_USE_CPU_ENGINE=1``) imports
``assign_req_to_token_pool_cpu`` and other ops from the CPU build of ``sgl_kernel``,
which the package index does not carry. The test bed puts this directory on the
``PYTHONPATH`` of every SGLang process it starts, and only where CUDA is absent; on a
GPU machine the real ``sgl_kernel`` is used and this is never on the path.
"""

from collections.abc import Callable

import torch


def assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """Write each request's new token slots into its row of the req-to-token table.

    Same contract as SGLang's Triton ``assign_req_to_token_pool``: request ``i``
    takes the next ``end - start`` entries of ``out_cache_loc`` into columns
    ``start:end`` of row ``req_pool_indices[i]``.
    """
    taken = 0
    rows = zip(req_pool_indices.tolist(), start_offset.tolist(), end_offset.tolist(), strict=True)
    for row, start, end in rows:
        length = end - start
        req_to_token[row, start:end] = out_cache_loc[taken : taken + length]
        taken += length


def __getattr__(name: str) -> Callable[..., object]:
    """Other CPU ops (e.g. ``copy_all_layer_kv_cache_cpu``) only have to import.

    SGLang's CPU modules import them at module level; the test bed never calls them
    (no speculative decoding, no hierarchical cache). Calling one says so.
    """
    if name.startswith("__"):
        raise AttributeError(name)

    def not_in_test_bed(*args: object, **kwargs: object) -> object:
        raise NotImplementedError(f"sgl_kernel.{name} is not part of the CPU test bed's stand-in")

    not_in_test_bed.__name__ = name
    return not_in_test_bed
