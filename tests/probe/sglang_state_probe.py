"""A test-only SGLang plugin that reads SGLang's own state, independently of ours.

Installed for a test server by putting this directory on its ``PYTHONPATH`` (the
``.dist-info`` beside it registers the entry point). After every change of the pool it
writes SGLang's own numbers: the eviction policy's counter and the slot map by name. And
it writes which requests SGLang's admission check ever refused, by adapter name, to
``SGLANG_ADMISSION_PROBE_FILE``.
"""

import json
import os


def _dump(result, pool, cur_uids, lora_adapters, lora_modules, lora_refs, *args, **kwargs):
    path = os.environ.get("SGLANG_STATE_PROBE_FILE")
    if not path:
        return None

    def name(uid):
        return "__base__" if uid is None else lora_refs[uid].lora_name if uid in lora_refs else uid

    state = {
        "eviction_count": pool.eviction_policy.eviction_count,
        "slots": {name(uid): slot for uid, slot in pool.uid_to_buffer_id.items()},
    }
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)
    return None


_refused = {}  # rid -> adapter name


def _admission(ok, scheduler, req, *args, **kwargs):
    path = os.environ.get("SGLANG_ADMISSION_PROBE_FILE")
    if ok or not path or req.rid in _refused:
        return None
    refs = scheduler.tp_worker.model_runner.lora_manager.lora_refs
    _refused[req.rid] = "__base__" if req.lora_id is None else refs[req.lora_id].lora_name
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_refused, f)
    os.replace(tmp, path)
    return None


def register():
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register("sglang.srt.lora.mem_pool.LoRAMemoryPool.prepare_lora_batch", _dump, HookType.AFTER)
    HookRegistry.register("sglang.srt.managers.scheduler.Scheduler.can_schedule_lora_req", _admission,
                          HookType.AFTER)
