"""One call, two adapters and the base model: which adapter served which output."""

import sys

from lora_telemetry.testbed import default_root, engine_kwargs, make

if __name__ == "__main__":  # SGLang spawns its scheduler processes
    bed = make(sys.argv[1] if len(sys.argv) > 1 else default_root())  # tiny model + adapters, cached
    kwargs = engine_kwargs(bed.root, max_loras_per_batch=4)  # before sglang is imported

    from lora_telemetry import LoRAEngine

    prompts = ["Which tables hold the orders?", "Select the count of orders", "Say hello"]
    params = [
        {"max_new_tokens": 100, "lora_name": "qa"},
        {"max_new_tokens": 100, "lora_name": "sql"},
        {"max_new_tokens": 100},  # no lora_name: the base model
    ]
    with LoRAEngine(**kwargs, adapter_dir=bed.adapter_dir) as engine:
        outputs = engine.generate(prompts, params)  # qa and sql load on first use
    for p, out in zip(params, outputs, strict=True):
        print(f"{p.get('lora_name') or 'base model':>10}: {out['text'][:60]!r}")
