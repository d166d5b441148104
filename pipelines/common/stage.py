"""DVC-style stage caching: a stage declares what it reads (deps), which parameters it uses
(params) and what it writes (outs). After a successful run a lock file records all three; a
re-run with the same deps and params, and every out present, does nothing. Changing a parameter
or an input re-runs the stage.

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
        return lock.get("deps") == state["deps"] and lock.get("params") == state["params"]

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
        return f"inputs changed: {', '.join(Path(c).name for c in changed[:3])}" if changed else "up to date"

    def skip_message(self) -> str:
        return f"{self.name}: up to date ({self.out_dir}), nothing to do"

    def done(self, extra: dict | None = None) -> None:
        state = self._state()
        state.update(stage=self.name, outs=self.outs, params_used=self.params)
        if extra:
            state.update(extra)
        write_json(self.lock_path, state)
