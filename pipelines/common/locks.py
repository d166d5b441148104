"""One writer per output folder: an OS file lock (filelock) held while a process writes a stage's outputs.

    with output_lock(config.model_dir(comp, source, run)):
        ... train the run ...

A second process on the same folder stops at once with one line naming the holder (PID, host, command,
since when) and the folder; processes on different folders (two models, two sources) run side by side.
The lock files live in ``config.LOCKS_DIR`` (``<project>/.locks/``, git-ignored), one per folder, so that no output folder
gets a file a stage did not write. The operating system releases a lock when its process ends, however it
ends: a killed run never leaves a folder locked (its holder note is simply overwritten by the next one).
Within one process a folder may be locked again (nested stages): the lock counts its holders.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from pipelines import config
from pipelines.common.log import StageError

_locks: dict = {}  # path -> FileLock: one object per file in a process, so that nested holds count


def lock_path(folder: Path) -> Path:
    """The lock file of ``folder``: named after its path relative to the project (readable), plus a short
    hash of the absolute path (unique)."""
    folder = Path(folder).resolve()
    try:
        shown = folder.relative_to(config.ROOT.resolve()).as_posix()
    except ValueError:
        shown = folder.as_posix().lstrip("/")
    digest = hashlib.sha256(str(folder).encode()).hexdigest()[:10]
    name = shown.replace("/", "__")[-120:]
    return config.LOCKS_DIR / f"{name}-{digest}.lock"


def _holder(path: Path) -> str:
    try:
        with open(path.with_suffix(".holder.json"), encoding="utf-8") as f:
            h = json.load(f)
        return f"PID {h['pid']} on {h['host']} ({h['command']}, since {h['since']})"
    except (OSError, ValueError, KeyError):
        return "another process"


@contextlib.contextmanager
def output_lock(folder: Path, what: str = "writes"):
    """Hold ``folder``'s lock for the ``with`` block; StageError at once when another process holds it."""
    import filelock

    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _locks.setdefault(str(path), filelock.FileLock(str(path), timeout=0))
    try:
        lock.acquire()
    except filelock.Timeout:
        raise StageError(f"{folder} is being written by {_holder(path)}: wait for it to finish or stop it "
                         f"(two processes never write one output)") from None
    try:
        if lock.lock_counter == 1:  # the outermost holder in this process leaves its note
            note = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "command": " ".join(["python -m pipelines", *sys.argv[1:]])[:200], "what": what}
            path.with_suffix(".holder.json").write_text(json.dumps(note), encoding="utf-8")
        yield
    finally:
        lock.release()
