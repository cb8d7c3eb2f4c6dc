"""The access log: what the adapter pool was asked to hold, batch by batch, in a text file.

Version 1. One record per line, fields separated by single spaces, times in Unix seconds
with millisecond precision, adapter names percent-encoded (all but letters, digits and
``_.-~``), the base model written ``__base__``. ``dp`` is the data-parallel rank of the
scheduler whose pool the record is about (each rank has a pool of its own)::

    S <time> <dp> <slots> <policy> <slot_bytes> [<name>=<priority> ...]
                                                  a scheduler's pool: slots (--max-loras-per-batch),
                                                  eviction policy (lru|fifo|priority), bytes per slot;
                                                  with priority, each adapter's priority (others 0)
    L <time> <dp> <name> <pinned>                 an adapter loaded into that scheduler (pinned: 0|1)
    U <time> <dp> <name>                          an adapter unloaded from it
    B <time> <dp> <name>[:<n>] ...                a batch the pool prepared: its adapters in the order
                                                  SGLang marks them used; n requests were first
                                                  scheduled in it. Without overlap loading one per
                                                  forward batch; with it, one per slot load started at
                                                  admission (the new adapter, the running batch's and
                                                  those still being copied: all marked used)
    A <time> <dp> <name>                          overlap loading: a request's first admission check, its
                                                  gpu lookup (a hit when the adapter holds a slot);
                                                  marks nothing
    C <time> <dp> <name> <seconds> <bytes>        a slot load's copy took this long (with overlap loading,
                                                  from its launch to its end) and read this many bytes
    D <time> <dp> [<name> ...]                    before a prefill batch: the adapters with unfinished
                                                  requests in the running batch (a priority pool keeps
                                                  them while another victim is left)
    R <arrival> <name> <prompt> <output>          a finished request, from the tokenizer side
    # <text>                                      a comment (a size limit reached is said so here)

The scheduler writes S, L, U, B, A, C and D; the tokenizer writes R; ``lora-telemetry bench --record``
writes R from its own schedule (a recording without B lines is analysed one batch per request).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

BASE = "__base__"
VERSION_LINE = "# lora-telemetry access log v1"


class RecordingError(ValueError):
    """A line that is not a record; names the line and its byte offset."""

    def __init__(self, path: Path, line: int, offset: int, reason: str) -> None:
        super().__init__(f"{path}: line {line} (byte offset {offset}): {reason}")
        self.line, self.offset = line, offset


@dataclass(slots=True)
class Pool:
    time: float
    dp: int
    slots: int
    policy: str
    slot_bytes: int
    priorities: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Load:
    time: float
    dp: int
    name: str
    pinned: bool


@dataclass(slots=True)
class Unload:
    time: float
    dp: int
    name: str


@dataclass(slots=True)
class Batch:
    time: float
    dp: int
    adapters: tuple[str, ...]  # in the order SGLang marks them
    new_requests: tuple[int, ...]  # per adapter: requests first scheduled in this batch


@dataclass(slots=True)
class Admission:
    """With overlap loading, a request's gpu lookup happens at its first admission check, apart
    from any batch the pool prepares (a hit prepares none)."""
    time: float
    dp: int
    name: str


@dataclass(slots=True)
class Copy:
    """How long one slot load took: what the planner prices slot loads by (the B records say
    which loads happen; a plan changes how many, not what each costs)."""
    time: float
    dp: int
    name: str
    seconds: float
    bytes: int


@dataclass(slots=True)
class Decoding:
    """What the running batch held when a prefill batch came: traffic's doing, not the policy's,
    so a plan's replay keeps it."""
    time: float
    dp: int
    names: tuple[str, ...]


@dataclass(slots=True)
class Request:
    arrival: float
    name: str
    prompt_tokens: int
    output_tokens: int


Record = Pool | Load | Unload | Batch | Admission | Copy | Decoding | Request


def encode(name: str) -> str:
    """Letters, digits and ``_.-~`` stay; everything else (``:`` included) is ``%XX``."""
    return quote(name, safe="")


def format_record(record: Record) -> str:
    """One line, without its newline."""
    match record:
        case Batch(time, dp, adapters, counts):
            items = " ".join(encode(a) + (f":{n}" if n else "") for a, n in zip(adapters, counts, strict=True))
            return f"B {time:.3f} {dp} {items}"
        case Pool(time, dp, slots, policy, slot_bytes, priorities):
            ranked = "".join(f" {encode(name)}={value}" for name, value in sorted(priorities.items()))
            return f"S {time:.3f} {dp} {slots} {policy} {slot_bytes}{ranked}"
        case Admission(time, dp, name):
            return f"A {time:.3f} {dp} {encode(name)}"
        case Copy(time, dp, name, seconds, size):
            return f"C {time:.3f} {dp} {encode(name)} {seconds:.6f} {size}"
        case Decoding(time, dp, names):
            return f"D {time:.3f} {dp}" + "".join(" " + encode(name) for name in names)
        case Load(time, dp, name, pinned):
            return f"L {time:.3f} {dp} {encode(name)} {int(pinned)}"
        case Unload(time, dp, name):
            return f"U {time:.3f} {dp} {encode(name)}"
        case Request(arrival, name, prompt, output):
            return f"R {arrival:.3f} {encode(name)} {prompt} {output}"
    raise TypeError(f"not a record: {record!r}")


def _items(text: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    adapters, counts = [], []
    for item in text.split(" "):
        name, count = item.rsplit(":", 1) if ":" in item else (item, "0")
        adapters.append(unquote(name) if "%" in name else name)
        counts.append(int(count))
    if not adapters or any(n < 0 for n in counts) or "" in adapters:
        raise ValueError("a batch needs adapters and non-negative counts")
    return tuple(adapters), tuple(counts)


def parse_line(text: str, last: list | None = None) -> Record | None:
    """The record on one line, None for a comment or a blank line; ValueError if malformed.

    ``last`` (a two-item list kept by the caller) remembers the previous batch's adapters so
    that the repeated batches of decode steps are not parsed again.
    """
    kind = text[:1]
    if kind == "B":
        _, time, dp, items = text.split(" ", 3)
        if last is not None and items == last[0]:
            adapters, counts = last[1]
        else:
            adapters, counts = _items(items)
            if last is not None:
                last[:] = [items, (adapters, counts)]
        return Batch(float(time), int(dp), adapters, counts)
    fields = text.split(" ")
    if kind in ("", "#"):
        return None
    if kind == "S" and (len(fields) == 6 and fields[4] in ("lru", "fifo") or fields[4:5] == ["priority"]):
        priorities = {unquote(name): int(value) for name, value in (f.rsplit("=", 1) for f in fields[6:])}
        return Pool(float(fields[1]), int(fields[2]), int(fields[3]), fields[4], int(fields[5]), priorities)
    if kind == "L" and len(fields) == 5 and fields[4] in ("0", "1"):
        return Load(float(fields[1]), int(fields[2]), unquote(fields[3]), fields[4] == "1")
    if kind == "A" and len(fields) == 4:
        return Admission(float(fields[1]), int(fields[2]), unquote(fields[3]))
    if kind == "C" and len(fields) == 6 and float(fields[4]) >= 0 and int(fields[5]) >= 0:
        return Copy(float(fields[1]), int(fields[2]), unquote(fields[3]), float(fields[4]), int(fields[5]))
    if kind == "D" and len(fields) >= 3:
        return Decoding(float(fields[1]), int(fields[2]), tuple(unquote(name) for name in fields[3:]))
    if kind == "U" and len(fields) == 4:
        return Unload(float(fields[1]), int(fields[2]), unquote(fields[3]))
    if kind == "R" and len(fields) == 5:
        return Request(float(fields[1]), unquote(fields[2]), int(fields[3]), int(fields[4]))
    raise ValueError(f"not a record: {text[:80]!r}")


def read(path: Path, partial: bool = False, errors: list[RecordingError] | None = None) -> Iterator[Record]:
    """The records of ``path`` in file order.

    A malformed or cut-off line raises :class:`RecordingError`; with ``partial`` reading stops
    there instead (the error goes to ``errors``), so what came before can still be analysed.
    """
    last: list = [None, None]
    offset = 0
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("the last line is cut off (no newline)")
                record = parse_line(raw[:-1].decode("utf-8"), last)
            except (ValueError, UnicodeDecodeError) as error:
                reason = f"not UTF-8 text ({error.reason})" if isinstance(error, UnicodeDecodeError) else str(error)
                problem = RecordingError(path, number, offset, reason or "malformed record")
                if not partial:
                    raise problem from None
                if errors is not None:
                    errors.append(problem)
                return
            offset += len(raw)
            if record is not None:
                yield record
