"""Run records: everything needed to say how a result was produced and to re-run it.

Each model run writes run.json with the git commit (and whether the tree was dirty), the full
configuration, the seed, the versions of the libraries that matter, fingerprints of its inputs
(the data manifest's hash among them), the device that trained it, the whole Python environment
(every package's version, and the lock file it was installed from with that file's sha256), and
start and end times.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

from pipelines import competitions, config
from pipelines.common.io import sha256_file

# The libraries that matter, recorded in every run.json and listed in this order under the comparison's table.
LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "lightgbm", "gensim", "scikit-learn", "pandas", "numpy",
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


LOCK_FILES = ("requirements.lock", "requirements-gpu.lock")  # in CODE_ROOT, written by `make lock`


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_packages() -> dict[str, str]:
    """{normalised distribution name: version} of every package in this Python environment."""
    out = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            out.setdefault(_norm(name), dist.version)
    return dict(sorted(out.items()))


def lock_pins(path: Path) -> dict[str, str]:
    """{name: version} a lock file pins for this platform (entries whose marker does not apply are left out)."""
    try:
        from packaging.markers import Marker
    except ImportError:  # pragma: no cover - packaging comes with the locked environment
        Marker = None
    pins = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if not m:
            continue
        name, version, marker = m.groups()
        if marker and Marker is not None and not Marker(marker).evaluate():
            continue
        pins[_norm(name)] = version
    return pins


def environment(root: Path | None = None, packages: dict[str, str] | None = None) -> dict:
    """The Python environment of this process: every package (name -> version), the hash of that list,
    and the lock file it matches (its sha256), if any. The comparison flags runs whose package
    list differs from the current one."""
    root = CODE_ROOT if root is None else Path(root)
    packages = installed_packages() if packages is None else dict(sorted(packages.items()))
    lock, matched_pins = None, -1
    for name in LOCK_FILES:
        path = root / name
        if not path.exists():
            continue
        pins = lock_pins(path)
        mismatched = sorted(n for n, v in pins.items() if packages.get(n) != v)
        if not mismatched and len(pins) > matched_pins:  # the GPU lock holds the CPU one: the fuller match wins
            lock, matched_pins = {"file": name, "sha256": sha256_file(path), "matches": True}, len(pins)
        elif lock is None:  # the first lock, to say how far this environment is from it
            lock = {"file": name, "sha256": sha256_file(path), "matches": False, "differs": mismatched[:20]}
    return {"python": sys.version.split()[0], "packages": packages,
            "packages_sha256": hashlib.sha256(json.dumps(packages, sort_keys=True).encode()).hexdigest(),
            "lock": lock}


def run_record(comp: str, source: str, model: str, params: dict, seed: int, started: str,
               inputs: dict | None = None, device: dict | None = None) -> dict:
    """``device``: which device trained the model (pipelines.common.device; the CPU when not given)."""
    return {
        "competition": competitions.get(comp).slug,
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
        "device": dict(device) if device else {"kind": "cpu"},
        "environment": environment(),
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
