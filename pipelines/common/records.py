"""Run records: everything needed to say how a result was produced and to re-run it.

Each model run writes run.json with the git commit (and whether the tree was dirty), the full
configuration, the seed, the versions of the libraries that matter, fingerprints of its inputs
(the data manifest's hash among them), and start and end times.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

from pipelines import config
from pipelines.common.io import sha256_file

LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "gensim", "lightgbm", "scikit-learn", "pandas", "numpy",
             "scipy", "pyarrow", "pillow", "rapidfuzz")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


CODE_ROOT = Path(__file__).resolve().parents[2]


def git_state(root: Path = CODE_ROOT) -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def manifest_hash(comp: str, source: str) -> str | None:
    manifest = config.source_dir(comp, source) / "manifest.json"
    return sha256_file(manifest) if manifest.exists() else None


def run_record(comp: str, source: str, model: str, params: dict, seed: int, started: str,
               inputs: dict | None = None) -> dict:
    return {
        "competition": config.COMPETITIONS[comp],
        "comp": comp,
        "source": config.source_label(source),
        "model": model,
        "params": params,
        "seed": seed,
        "git": git_state(),
        "versions": library_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "data_manifest_sha256": manifest_hash(comp, source),
        "inputs": inputs or {},
        "started": started,
        "finished": now(),
    }


def input_fingerprints(paths) -> dict[str, str | None]:
    """{path relative to the project root: sha256} of a run's inputs (e.g. the features lock file),
    recorded in run.json so the comparison can flag a model trained on features that changed since."""
    out = {}
    for p in paths:
        p = Path(p)
        try:
            key = str(p.resolve().relative_to(config.ROOT.resolve()))
        except ValueError:
            key = str(p.resolve())
        out[key] = sha256_file(p) if p.exists() else None
    return out
