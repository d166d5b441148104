"""File I/O at the edges, every write atomic: a temp file in the target folder, then rename.

An interrupted stage therefore never leaves a half-written file that looks complete.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pipelines.common.log import StageError

_UMASK = os.umask(0)
os.umask(_UMASK)


DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# Writers that wrap the OS error in their own (pyarrow's ArrowIOError, h5py) often keep only its text.
_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "errno 28", "errno 122")


class DiskFullError(StageError):
    """A write failed because the disk (or the user's quota) is full; nothing half-written is left."""


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or an error it was raised from) is ENOSPC/EDQUOT, however a library wrapped it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(exc, OSError) and any(t in str(exc).lower() for t in _DISK_FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def human_size(n: float) -> str:
    """Bytes as a short human figure (12.3 MB)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free space of the file system holding ``path`` (its nearest existing parent), or None."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def disk_full_error(path: str | os.PathLike, needed: int | None = None, written: int | None = None,
                    cleaned: bool = True) -> DiskFullError:
    """One line naming the file being written and the space it needs beside the space that is free."""
    free = free_bytes(path)
    if needed:
        need = f"{human_size(needed)} needed"
    elif written:
        need = f"more than the {human_size(written)} written when the disk filled needed"
    else:
        need = "space needed"
    have = f", {human_size(free)} free" if free is not None else ""
    kept = "; nothing half-written was kept" if cleaned else ""
    return DiskFullError(f"disk full while writing {path} ({need}{have}){kept}: free some space (or set "
                         f"PIPELINES_ROOT to a bigger disk) and run the same command again")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, expected_bytes: int | None = None
                ) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds.

    ``suffix`` keeps the extension for writers that insist on one (np.save, savez). A full disk
    (ENOSPC/EDQUOT, whichever writer hit it) becomes ``DiskFullError`` naming ``path`` and the space
    (``expected_bytes`` when the caller knows it); the temp file is removed in every failure.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = suffix if suffix is not None else "".join(path.suffixes)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, expected_bytes) from None
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private (0600); outputs are ordinary files, readable like any other.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException as exc:
        written = None
        with contextlib.suppress(OSError):
            written = tmp_path.stat().st_size
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if not isinstance(exc, StageError) and isinstance(exc, Exception) and is_disk_full(exc):
            raise disk_full_error(path, expected_bytes, written) from None
        raise


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path, expected_bytes=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_npy(path, array: np.ndarray) -> Path:
    with atomic_path(path, suffix=".npy", expected_bytes=int(np.asarray(array).nbytes)) as tmp:
        np.save(tmp, array, allow_pickle=False)
    return Path(path)


def save_npz(path, **arrays) -> Path:
    size = sum(int(np.asarray(a).nbytes) for a in arrays.values())
    with atomic_path(path, suffix=".npz", expected_bytes=size) as tmp:
        np.savez(tmp, **arrays)
    return Path(path)


def save_sparse(path, matrix) -> Path:
    import scipy.sparse as sp

    csr = matrix.tocsr()
    size = int(csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes)
    with atomic_path(path, suffix=".npz", expected_bytes=size) as tmp:
        sp.save_npz(tmp, csr, compressed=False)
    return Path(path)


def write_parquet(path, df) -> Path:
    with atomic_path(path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def write_csv(path, df, **kwargs) -> Path:
    with atomic_path(path, suffix=".csv") as tmp:
        df.to_csv(tmp, index=False, **kwargs)
    return Path(path)


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_json_default).encode()).hexdigest()
