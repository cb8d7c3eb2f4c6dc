"""Bytes SGLang holds for adapters, read from its own tensors (each rank's, in their dtype and
TP-local shapes), so that what a rank reports is what that rank holds."""

from __future__ import annotations

from typing import Any

_capacity: dict[int, int] = {}
_WEIGHT_BYTES = "_lora_telemetry_weight_bytes"

_ADAPTER_TENSOR_DICTS = ("embedding_layers", "added_tokens_embeddings", "pinned_embedding_layers",
                         "pinned_added_tokens_embeddings")
_POOL_EXTRA_BUFFERS = ("embedding_A_buffer", "embedding_B_buffer", "lm_head_A_buffer", "lm_head_B_buffer",
                       "new_embeddings_buffer")


def _tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def adapter_bytes(adapter: Any) -> int:
    """Host bytes of one loaded adapter: its weights, and the pinned copies SGLang caches for
    overlap loading once the adapter was first copied into a slot."""
    total = 0
    for layer in getattr(adapter, "layers", []):
        for name in ("weights", "pinned_weights"):
            total += _tensor_bytes((getattr(layer, name, None) or {}).values())
    for name in _ADAPTER_TENSOR_DICTS:
        total += _tensor_bytes((getattr(adapter, name, None) or {}).values())
    return total


def weight_bytes(adapter: Any) -> int:
    """Bytes a slot load copies: the adapter's weights, once (from the pinned copy with overlap
    loading, from the pageable one otherwise). Weights never change under a loaded adapter, so
    the sum is kept on it."""
    cached = getattr(adapter, _WEIGHT_BYTES, None)
    if cached is None:
        cached = sum(_tensor_bytes((getattr(layer, "weights", None) or {}).values())
                     for layer in getattr(adapter, "layers", []))
        cached += sum(_tensor_bytes((getattr(adapter, name, None) or {}).values())
                      for name in ("embedding_layers", "added_tokens_embeddings"))
        setattr(adapter, _WEIGHT_BYTES, cached)
    return cached


def pool_bytes(pool: Any) -> int:
    """Bytes of every slot buffer of the pool (computed once per pool)."""
    key = id(pool)
    if key not in _capacity:
        total = 0
        for buffers in (*pool.A_buffer.values(), *pool.B_buffer.values()):
            total += _tensor_bytes(buffers)
        for name in _POOL_EXTRA_BUFFERS:
            total += _tensor_bytes(getattr(pool, name, {}).values())
        _capacity[key] = total
    return _capacity[key]


def slot_bytes(pool: Any) -> int:
    return pool_bytes(pool) // pool.max_loras_per_batch
