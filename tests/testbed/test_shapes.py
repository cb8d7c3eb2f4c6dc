"""Shaped beds: a real model's dimensions with random weights, loadable as the model and adapters they claim."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from safetensors import safe_open

from lora_telemetry.testbed.shapes import SHAPES, Shape, make_shaped, shape_named

SMALL = shape_named("llama3-8b", layers=2, hidden=64, intermediate=160, heads=4, kv_heads=2)


@pytest.fixture(scope="module")
def shaped(tmp_path_factory):
    return make_shaped(tmp_path_factory.mktemp("shaped"), SMALL, adapters=2, rank=4)


def test_an_8b_adapter_of_rank_16_on_every_projection_is_80_mib():
    assert SHAPES["llama3-8b"].adapter_bytes(16) == 80 * 2**20


def test_transformers_builds_the_model_from_the_files_with_nothing_missing(shaped):
    from transformers import LlamaForCausalLM

    model, info = LlamaForCausalLM.from_pretrained(shaped.model, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert model.config.num_key_value_heads == 2 and model.config.intermediate_size == 160
    assert next(model.parameters()).dtype.is_floating_point
    assert all(p.abs().sum() > 0 for name, p in model.named_parameters() if "proj" in name)


def test_peft_loads_each_adapter_onto_the_model_with_every_projection(shaped):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(shaped.model)
    for path in shaped.adapters().values():
        model = PeftModel.from_pretrained(base, path)
        targets = {name.split(".")[-2] for name, _ in model.named_modules() if name.endswith("lora_A")}
        assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
        base = model.unload()


def test_adapter_files_hold_exactly_the_bytes_the_shape_gives(shaped):
    for path in shaped.adapters().values():
        with safe_open(path / "adapter_model.safetensors", "pt") as tensors:
            total = sum(tensors.get_tensor(k).numel() * 2 for k in tensors.keys())
            assert {str(tensors.get_tensor(k).dtype) for k in tensors.keys()} == {"torch.bfloat16"}
        assert total == SMALL.adapter_bytes(4)
        assert json.loads((path / "adapter_config.json").read_text())["r"] == 4


def test_a_bed_of_another_shape_or_rank_is_refused_and_the_same_is_reused(shaped):
    modified = (shaped.adapters()["qa"] / "adapter_model.safetensors").stat().st_mtime_ns
    assert make_shaped(shaped.root, SMALL, adapters=2, rank=4).adapters() == shaped.adapters()
    assert (shaped.adapters()["qa"] / "adapter_model.safetensors").stat().st_mtime_ns == modified
    with pytest.raises(ValueError, match="another shape or rank"):
        make_shaped(shaped.root, SMALL, adapters=2, rank=8)


@pytest.mark.parametrize("dims, message", [({"heads": 5}, "divide"), ({"layers": 0}, "at least 1")])
def test_impossible_shapes_are_refused_with_the_reason(dims, message):
    with pytest.raises(ValueError, match=message):
        shape_named("llama3-8b", **dims)
    with pytest.raises(ValueError, match="unknown shape"):
        shape_named("gpt5")
    assert isinstance(SHAPES["llama2-7b"], Shape)


def test_the_command_makes_a_shaped_bed_and_says_where(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lora_telemetry.cli", "testbed", "make", str(tmp_path / "bed"),
                             "--shape", "llama3-1b", "--layers", "1", "--hidden", "32", "--intermediate", "64",
                             "--heads", "2", "--kv-heads", "1", "--adapters", "1", "--rank", "2"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "1 adapters" in result.stdout
    config = json.loads((tmp_path / "bed" / "model" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["torch_dtype"]) == (1, 32, "bfloat16")
