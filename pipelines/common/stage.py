"""DVC-style stage caching: a stage declares what it reads (deps), which parameters it uses
(params) and what it writes (outs). After a successful run a lock file records all three, with
each output's size and quick hash; a re-run with the same deps and params, and every out present
and intact, does nothing. Changing a parameter or an input, or damaging an output, re-runs the stage.

    stage = Stage("features", out_dir, deps=[raw_dir / "train.csv"], params=cfg, outs=["x.npy"])
    if stage.up_to_date():
        log.info(stage.skip_message()); return
    ... write outs atomically ...
    stage.done()
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable

from pipelines.common.io import read_json, sha256_json, write_json
from pipelines.common.log import StageError

log = logging.getLogger(__name__)


def fingerprint(path: Path) -> Any:
    """Cheap identity of a file or folder: size and mtime of every file (like make, plus sizes)."""
    path = Path(path)
    if not path.exists():
        return None
    if path.is_file():
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            st = p.stat()
            entries.append([str(p.relative_to(path)), st.st_size, st.st_mtime_ns])
    return sha256_json(entries)


SAMPLES = 16          # blocks read by quick_hash besides the first and last
SAMPLE_BYTES = 1 << 16


def quick_hash(path: Path) -> str:
    """A cheap content hash: sha256 of the size and of 18 blocks of 64 KB (the first, the last and 16
    evenly spaced), so checking a cached output reads at most ~1.2 MB whatever its size. A truncated or
    replaced file changes it; a flipped byte between the blocks may not (the size and the format's own
    checks catch most of those when the file is read)."""
    import hashlib

    size = os.path.getsize(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= (SAMPLES + 2) * SAMPLE_BYTES:
            h.update(f.read())
        else:
            step = (size - SAMPLE_BYTES) / (SAMPLES + 1)
            for i in range(SAMPLES + 2):
                f.seek(int(i * step))
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def output_check(path: Path) -> dict | None:
    """What the lock records of one output: size and quick hash of a file (a folder: its fingerprint)."""
    path = Path(path)
    if path.is_file():
        return {"size": path.stat().st_size, "quick_sha256": quick_hash(path)}
    if path.is_dir():
        return {"fingerprint": fingerprint(path)}
    return None


def damaged_outputs(out_dir: Path, recorded: dict) -> list[str]:
    """'<name> (why)' for each output whose size or quick hash no longer matches the lock's record."""
    damaged = []
    for name, check in (recorded or {}).items():
        path = Path(out_dir) / name
        if check is None:
            continue
        if not path.exists():
            damaged.append(f"{name} (missing)")
        elif "size" in check and path.is_file():
            size = path.stat().st_size
            if size != check["size"]:
                damaged.append(f"{name} ({size:,} bytes, {check['size']:,} when written)")
            elif quick_hash(path) != check.get("quick_sha256"):
                damaged.append(f"{name} (content changed since it was written)")
    return damaged


def verify_lock_outputs(lock_path: Path, rebuild: str) -> None:
    """StageError naming the first damaged output a lock file lists (for a stage that loads them)."""
    lock_path = Path(lock_path)
    try:
        lock = read_json(lock_path)
    except (OSError, ValueError) as exc:
        raise StageError(f"{lock_path} is unreadable ({exc}): run `{rebuild}`") from None
    damaged = damaged_outputs(lock_path.parent, lock.get("outs_check") or {})
    if damaged:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise StageError(f"{lock_path.parent / damaged[0]} is damaged{more}: run `{rebuild}` to rebuild it")


def stale_deps(lock_path: Path) -> list[str]:
    """Names of the inputs a finished stage recorded in its lock that changed since (size or mtime)."""
    lock = read_json(lock_path)
    return [Path(d).name for d, fp in (lock.get("deps") or {}).items() if fingerprint(Path(d)) != fp]


def check_current(lock_path: Path, rebuild: str) -> None:
    """For a stage about to load another stage's outputs: StageError (one line, with the command that
    rebuilds them) when an output is damaged or an input of that stage changed after it ran."""
    verify_lock_outputs(lock_path, rebuild)
    changed = stale_deps(lock_path)
    if changed:
        raise StageError(f"{Path(lock_path).parent} is out of date: {', '.join(changed[:3])} changed after it was "
                         f"built; run `{rebuild}` first")


class Stage:
    def __init__(self, name: str, out_dir: Path, deps: Iterable[Path], params: dict, outs: Iterable[str]):
        self.name = name
        self.out_dir = Path(out_dir)
        self.deps = [Path(d) for d in deps]
        self.params = params
        self.outs = list(outs)
        self.lock_path = self.out_dir / f"{name}.lock.json"

    def _state(self) -> dict:
        return {
            "deps": {str(d): fingerprint(d) for d in self.deps},
            "params": sha256_json(self.params),
        }

    def up_to_date(self) -> bool:
        if not self.lock_path.exists():
            return False
        try:
            lock = read_json(self.lock_path)
        except (OSError, ValueError):
            return False
        if any(not (self.out_dir / o).exists() for o in self.outs):
            return False
        state = self._state()
        if lock.get("deps") != state["deps"] or lock.get("params") != state["params"]:
            return False
        damaged = damaged_outputs(self.out_dir, lock.get("outs_check") or {})
        if damaged:
            log.warning("%s: %s damaged since the stage wrote it: re-running the step", self.name,
                        ", ".join(damaged[:3]))
            return False
        return True

    def why_stale(self) -> str:
        if not self.lock_path.exists():
            return "never run"
        lock = read_json(self.lock_path)
        missing = [o for o in self.outs if not (self.out_dir / o).exists()]
        if missing:
            return f"missing outputs: {', '.join(missing[:3])}"
        state = self._state()
        if lock.get("params") != state["params"]:
            return "parameters changed"
        changed = [d for d, fp in state["deps"].items() if lock.get("deps", {}).get(d) != fp]
        if changed:
            return f"inputs changed: {', '.join(Path(c).name for c in changed[:3])}"
        damaged = damaged_outputs(self.out_dir, lock.get("outs_check") or {})
        return f"damaged outputs: {', '.join(damaged[:3])}" if damaged else "up to date"

    def skip_message(self) -> str:
        return f"{self.name}: up to date ({self.out_dir}), nothing to do"

    def done(self, extra: dict | None = None) -> None:
        state = self._state()
        state.update(stage=self.name, outs=self.outs, params_used=self.params,
                     outs_check={o: output_check(self.out_dir / o) for o in self.outs})
        if extra:
            state.update(extra)
        write_json(self.lock_path, state)
