"""Adapter names from callers: validated before anything reaches SGLang, and resolved
inside an adapter directory without ever leaving it."""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TypeVar

from lora_telemetry import events as ev

MAX_NAME_LENGTH = 128
RESERVED = frozenset({ev.BASE, ev.UNKNOWN, ev.OTHER})
T = TypeVar("T")


class AdapterNameError(ValueError):
    """An adapter name that is malformed or not known; names the adapter and lists the known ones."""

    def __init__(self, name: object, problem: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        listed = ", ".join(self.known) if self.known else "(none)"
        super().__init__(f"adapter {name!r}: {problem}. Known adapters: {listed}")


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be an adapter name, or None if it can."""
    if not isinstance(name, str):
        return f"expected a string, got {type(name).__name__}"
    if not name:
        return "empty name"
    if len(name) > MAX_NAME_LENGTH:
        return f"longer than {MAX_NAME_LENGTH} characters"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if ".." in name or name.startswith("."):
        return "contains '..' or starts with '.'"
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        return "contains control characters"
    if name in RESERVED:
        return "reserved name"
    return None


def check_name(name: object, known: Iterable[str]) -> str:
    problem = name_problem(name)
    if problem:
        raise AdapterNameError(name, problem, known)
    return name  # type: ignore[return-value]


class AdapterDirectory:
    """Adapters found by name as sub-folders (holding ``adapter_config.json``) of one directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "adapter_config.json").is_file()
                      and name_problem(p.name) is None)

    def find(self, name: str) -> Path | None:
        """The folder of a valid ``name`` inside the directory (symlinks out of it refused), or None."""
        if name_problem(name):
            return None
        folder = (self.root / name).resolve()
        if folder.parent != self.root or not (folder / "adapter_config.json").is_file():
            return None
        return folder


class SingleFlight:
    """Runs one load per key at a time; concurrent callers for the same key share its result."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future] = {}

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            result = await work()
            future.set_result(result)
            return result
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: callers that share it re-raise it themselves
            raise
        finally:
            del self._running[key]
