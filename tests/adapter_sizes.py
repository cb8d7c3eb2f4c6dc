"""What SGLang holds for adapters, computed from the files and the model config alone."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open


def element_size(model: Path) -> int:
    """Bytes per weight SGLang holds: the model's dtype (the CPU test bed's float32, a shaped bed's bfloat16)."""
    config = json.loads((model / "config.json").read_text())
    dtype = config.get("torch_dtype") or config.get("dtype") or "float32"
    return {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]


def host_bytes(adapter: Path, model: Path) -> int:
    """What SGLang holds for an adapter: its tensors, plus a zero-filled k projection when an
    adapter targets q but not k (SGLang stacks q, k, v into one qkv projection)."""
    config = json.loads((model / "config.json").read_text())
    targets = set(json.loads((adapter / "adapter_config.json").read_text())["target_modules"])
    size = element_size(model)
    total = 0
    with safe_open(adapter / "adapter_model.safetensors", "pt") as tensors:
        for key in tensors.keys():
            total += tensors.get_slice(key).get_shape()[0] * tensors.get_slice(key).get_shape()[1] * size
    if "q_proj" in targets and "k_proj" not in targets:
        rank = json.loads((adapter / "adapter_config.json").read_text())["r"]
        kv_dim = config["hidden_size"] // config["num_attention_heads"] * config["num_key_value_heads"]
        total += config["num_hidden_layers"] * (rank * config["hidden_size"] + kv_dim * rank) * size
    return total


def pool_capacity(model: Path, slots: int, max_rank: int, tp: int = 1) -> int:
    """Slot buffers at max rank for the seven projections (q/k/v and gate/up stacked), summed
    over ``tp`` ranks: column-parallel layers (qkv, gate_up) split B by output, row-parallel
    layers (o, down) split A by input; the other matrix is whole on every rank."""
    c = json.loads((model / "config.json").read_text())
    hidden, inter, layers, r = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], max_rank
    kv_dim = hidden // c["num_attention_heads"] * c["num_key_value_heads"]
    per_layer_per_rank = (
        3 * r * hidden + (hidden + 2 * kv_dim) // tp * r  # qkv_proj: A whole, B split
        + r * hidden // tp + hidden * r  # o_proj: A split, B whole
        + 2 * r * hidden + 2 * inter // tp * r  # gate_up_proj: A whole, B split
        + r * inter // tp + hidden * r  # down_proj: A split, B whole
    )
    return tp * slots * layers * per_layer_per_rank * element_size(model)
