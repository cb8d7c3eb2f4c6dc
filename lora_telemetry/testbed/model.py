"""The test bed's tiny model and LoRA adapters, made offline and deterministically.

A Llama-architecture model small enough for SGLang to serve on two CPU cores, with a
byte-level BPE tokenizer trained in-process (no download), and peft LoRA adapters of
mixed ranks (4 and 8) and target modules (all seven projections, or q/v only). Every
adapter gets non-zero B matrices so that it really changes the model's output.
Everything is seeded; a directory that already holds a complete test bed is reused.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QV_ONLY = ("q_proj", "v_proj")
MAX_RANK = 8
# Friendly names first (the README's example uses "qa" and "sql"), numbered names after.
_NAMES = ("qa", "sql", "chat", "code", "math", "legal", "med", "fin")
SERVED_MODEL_NAME = "tiny-llama"
CONTEXT_LENGTH = 512

_CORPUS_WORDS = (
    "the adapter pool serves many tenants with one base model while each request names "
    "its own low rank adapter question answer query table select from where join group "
    "order limit count sum average policy contract patient dose price market code test "
    "function return value loop branch proof lemma theorem number prime matrix vector"
).split()
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    rank: int
    target_modules: tuple[str, ...]
    seed: int


@dataclass(frozen=True)
class TestBed:
    """Paths of a made test bed."""

    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def adapter_dir(self) -> Path:
        return self.root / "adapters"

    def adapters(self) -> dict[str, Path]:
        manifest = json.loads((self.root / "testbed.json").read_text())
        return {a["name"]: self.adapter_dir / a["name"] for a in manifest["adapters"]}


def adapter_name(index: int) -> str:
    return _NAMES[index] if index < len(_NAMES) else f"lora{index:04d}"


def adapter_specs(count: int, seed: int = 0) -> list[AdapterSpec]:
    """Ranks alternate 4, 8; targets alternate in pairs: all projections, q/v only."""
    return [
        AdapterSpec(
            name=adapter_name(i),
            rank=4 if i % 2 == 0 else 8,
            target_modules=ALL_PROJECTIONS if (i // 2) % 2 == 0 else QV_ONLY,
            seed=seed * 100_003 + i + 1,
        )
        for i in range(count)
    ]


def _quiet_transformers() -> None:
    """The caller shows its own progress; transformers' per-file bars would interleave with it."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _train_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines = [
        " ".join(_CORPUS_WORDS[(i * 7 + j * 3) % len(_CORPUS_WORDS)] for j in range(12))
        for i in range(400)
    ]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    fast.chat_template = _CHAT_TEMPLATE
    fast.save_pretrained(out)


def _make_model(out: Path, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=CONTEXT_LENGTH,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)


def make_adapter(model_path: Path, spec: AdapterSpec, out: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(model_path, torch_dtype=torch.float32)
    config = LoraConfig(
        r=spec.rank,
        lora_alpha=2 * spec.rank,
        target_modules=list(spec.target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    peft_model.save_pretrained(out, safe_serialization=True)


def make(
    root: Path,
    adapters: int = 8,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _msg: None,
) -> TestBed:
    """Make (or reuse) a test bed in ``root`` with ``adapters`` adapters."""
    if adapters < 1:
        raise ValueError(f"--adapters must be at least 1, got {adapters}")
    root = Path(root)
    bed = TestBed(root)
    specs = adapter_specs(adapters, seed)
    _quiet_transformers()
    if not (bed.model / "config.json").exists():
        progress("model and tokenizer")
        partial = root / "model.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        _train_tokenizer(partial)
        _make_model(partial, seed)
        partial.rename(bed.model)
    for spec in specs:
        target = bed.adapter_dir / spec.name
        if (target / "adapter_config.json").exists():
            continue
        progress(f"adapter {spec.name} (rank {spec.rank}, {len(spec.target_modules)} modules)")
        partial = bed.adapter_dir / f".{spec.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        make_adapter(bed.model, spec, partial)
        partial.rename(target)
    manifest = {"seed": seed, "max_rank": MAX_RANK, "adapters": [_spec_json(s) for s in specs]}
    (root / "testbed.json").write_text(json.dumps(manifest, indent=2))
    return bed


def _spec_json(spec: AdapterSpec) -> dict:
    data = asdict(spec)
    data["target_modules"] = list(spec.target_modules)
    return data
