"""Small file helpers shared by every stage: atomic writes and JSON-lines logs.

An atomic write goes to a temporary file beside the target and is swapped in with `os.replace`, so a reader
(or a run killed half-way) sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that sniff it still work); on a clean
    exit it replaces `path`, on an error it is removed and `path` is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write `obj` as JSON to `path` atomically; returns the path."""
    return write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON object as a line."""
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    """Every JSON object in a JSON-lines file (empty list when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
