"""Beds the shape of a real model, for a GPU: random weights, real sizes, no download.

What a GPU changes (slot copies of tens of MB, CUDA graphs, real kernels) only shows at a real
model's sizes, and the numbers do not depend on what the weights say. So a shaped bed is a
Llama-architecture model with a real model's dimensions and random bf16 weights, written as
safetensors one layer at a time (SGLang's LoRA loader refuses ``--load-format dummy``), the test
bed's 512-token tokenizer, and peft adapters of one rank on all seven projections, written
straight from tensors (building a peft model would need the whole base model in memory).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from lora_telemetry.testbed.model import ALL_PROJECTIONS, TestBed, _train_tokenizer, adapter_name

VOCAB = 512  # the test bed's tokenizer: a bigger embedding would only add bytes nobody reads
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int

    def __post_init__(self) -> None:
        for field, value in asdict(self).items():
            if value < 1:
                raise ValueError(f"{field} must be at least 1, got {value}")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"hidden {self.hidden} must divide into {self.heads} heads, and the heads into "
                             f"{self.kv_heads} kv heads")

    def projections(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each projection a LoRA adapter can target."""
        kv = self.kv_heads * (self.hidden // self.heads)
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def adapter_bytes(self, rank: int) -> int:
        """Bytes of one bf16 adapter of ``rank`` on every projection of every layer."""
        return 2 * rank * self.layers * sum(fin + fout for fin, fout in self.projections().values())


SHAPES = {
    "llama3-8b": Shape(layers=32, hidden=4096, intermediate=14336, heads=32, kv_heads=8),
    "llama2-7b": Shape(layers=32, hidden=4096, intermediate=11008, heads=32, kv_heads=32),
    "llama3-1b": Shape(layers=16, hidden=2048, intermediate=8192, heads=32, kv_heads=8),
}


def shape_named(name: str, **overrides: int | None) -> Shape:
    """A known shape, with any of its dimensions replaced."""
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}: choose one of {', '.join(SHAPES)}")
    return replace(SHAPES[name], **{k: v for k, v in overrides.items() if v is not None})


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _config(shape: Shape) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": shape.hidden,
            "intermediate_size": shape.intermediate, "num_hidden_layers": shape.layers,
            "num_attention_heads": shape.heads, "num_key_value_heads": shape.kv_heads, "vocab_size": VOCAB,
            "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "bos_token_id": 1,
            "eos_token_id": 2, "torch_dtype": "bfloat16", "hidden_act": "silu", "tie_word_embeddings": False}


def _write_model(out: Path, shape: Shape, seed: int, progress: Callable[[str], None]) -> None:
    import torch
    from safetensors.torch import save_file

    device = _device()
    generator = torch.Generator(device=device).manual_seed(seed)

    def weight(*dims: int) -> torch.Tensor:
        return (torch.randn(*dims, generator=generator, device=device, dtype=torch.bfloat16) * 0.02).cpu()

    def ones() -> torch.Tensor:
        return torch.ones(shape.hidden, dtype=torch.bfloat16)

    index: dict[str, str] = {}

    def shard(number: int, tensors: dict) -> None:
        name = f"model-{number:05d}.safetensors"
        save_file(tensors, str(out / name), metadata={"format": "pt"})
        index.update(dict.fromkeys(tensors, name))

    shard(0, {"model.embed_tokens.weight": weight(VOCAB, shape.hidden), "model.norm.weight": ones(),
              "lm_head.weight": weight(VOCAB, shape.hidden)})
    for layer in range(shape.layers):
        progress(f"model layer {layer + 1}/{shape.layers}")
        prefix = f"model.layers.{layer}."
        tensors = {prefix + "input_layernorm.weight": ones(), prefix + "post_attention_layernorm.weight": ones()}
        for module, (fin, fout) in shape.projections().items():
            tensors[f"{prefix}{_part(module)}.{module}.weight"] = weight(fout, fin)
        shard(layer + 1, tensors)
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))
    (out / "config.json").write_text(json.dumps(_config(shape), indent=2))


def _part(module: str) -> str:
    return "self_attn" if module in _ATTENTION else "mlp"


def write_adapter(out: Path, shape: Shape, rank: int, seed: int, base: Path) -> None:
    """A peft adapter of ``rank`` on all seven projections, as ``save_pretrained`` lays it out."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(shape.layers):
        for module, (fin, fout) in shape.projections().items():
            key = f"base_model.model.model.layers.{layer}.{_part(module)}.{module}"
            tensors[key + ".lora_A.weight"] = (torch.randn(rank, fin, generator=generator) * 0.01).to(torch.bfloat16)
            tensors[key + ".lora_B.weight"] = (torch.randn(fout, rank, generator=generator) * 0.01).to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(ALL_PROJECTIONS),
              "lora_dropout": 0.0, "bias": "none", "task_type": "CAUSAL_LM", "fan_in_fan_out": False,
              "base_model_name_or_path": str(base)}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))


def make_shaped(root: Path, shape: Shape, adapters: int = 16, rank: int = 16, seed: int = 0,
                progress: Callable[[str], None] = lambda _msg: None) -> TestBed:
    """Make (or reuse) a bed of ``shape`` in ``root``: a bed made with another shape or rank is refused,
    so that two shapes never mix in one directory."""
    if adapters < 1 or rank < 1:
        raise ValueError(f"--adapters and --rank must be at least 1, got {adapters} and {rank}")
    root = Path(root)
    bed = TestBed(root)
    manifest_path = root / "testbed.json"
    if manifest_path.exists():
        made = json.loads(manifest_path.read_text())
        if made.get("shape") != asdict(shape) or made.get("max_rank") != rank:
            raise ValueError(f"{root} holds a bed of another shape or rank; choose an empty directory")
    if not (bed.model / "model.safetensors.index.json").exists():
        partial = root / "model.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        progress("tokenizer")
        _train_tokenizer(partial)
        _write_model(partial, shape, seed, progress)
        partial.rename(bed.model)
    names = [adapter_name(i) for i in range(adapters)]
    for i, name in enumerate(names):
        target = bed.adapter_dir / name
        if (target / "adapter_config.json").exists():
            continue
        progress(f"adapter {name} ({i + 1}/{adapters}, rank {rank})")
        partial = bed.adapter_dir / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        write_adapter(partial, shape, rank, seed * 100_003 + i + 1, bed.model)
        partial.rename(target)
    adapter_specs = [{"name": n, "rank": rank, "target_modules": list(ALL_PROJECTIONS), "seed": seed * 100_003 + i + 1}
                     for i, n in enumerate(names)]
    manifest = {"seed": seed, "max_rank": rank, "shape": asdict(shape), "adapters": adapter_specs}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return bed
