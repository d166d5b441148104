"""Unpacking what Kaggle ships (or what a user downloaded by hand): .zip, .7z, split .7z.001, single-file .gz.

Every entry name is checked before anything is written: absolute paths, ``..`` components and links are
refused (a crafted archive must not write outside its destination). Broken or truncated archives raise
``StageError`` with the file's name, never a traceback.

An encrypted .7z needs its password; ``password_env`` (the competition's ``archive_password_env``, e.g. a
variable named after it; None: it has none) only words the messages, which say where the password goes.
"""
from __future__ import annotations

import contextlib
import errno
import filecmp
import gzip
import logging
import lzma
import os
import re
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from pipelines.common.io import human_size
from pipelines.common.log import StageError

log = logging.getLogger(__name__)

_SPLIT_7Z = re.compile(r"\.7z\.0*1$", re.IGNORECASE)
_SPLIT_7Z_PART = re.compile(r"\.7z\.\d+$", re.IGNORECASE)
# Metadata some archivers add; never competition data.
JUNK_NAMES = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}


class BrokenArchiveError(StageError):
    """The archive is truncated or corrupt: download it again."""


class PasswordError(StageError):
    """The archive is encrypted and no (or a wrong) password was given."""


class UnsafeArchiveError(StageError):
    """An entry would land outside the destination (absolute path, '..', link)."""


class ArchiveLimitError(StageError):
    """An archive would unpack to more than the limits allow (total bytes, or one entry's compression ratio)."""


# Kaggle's largest competition download here (the cervix images with the additional sets) unpacks to about
# 35 GB, and its CSVs and JPEGs compress 1-5 fold; a zip bomb reaches ratios of a thousand and more.
MAX_UNPACKED_BYTES = 100 * 1024**3
MAX_RATIO = 100.0
RATIO_MIN_BYTES = 1 << 20  # entries smaller than this are not checked for their ratio (tiny text compresses well)


class UnpackBudget:
    """The limits of one data stage run: total bytes unpacked from every archive, and each entry's ratio."""

    def __init__(self, max_bytes: float = MAX_UNPACKED_BYTES, max_ratio: float = MAX_RATIO):
        self.max_bytes, self.max_ratio, self.used = max_bytes, max_ratio, 0

    def check_entry(self, archive: Path, name: str, size: int, compressed: int | None) -> None:
        if compressed is not None and size >= RATIO_MIN_BYTES and size > self.max_ratio * max(compressed, 1):
            ratio = size / max(compressed, 1)
            raise ArchiveLimitError(
                f"{archive.name}: entry {name!r} would unpack to {human_size(size)} from {human_size(compressed)} "
                f"(ratio {ratio:.0f}, limit {self.max_ratio:.0f}): not what a competition file looks like, so it was "
                f"not unpacked; if you trust it, pass --max-ratio {int(ratio) + 1} (make data ARGS=...)")

    def add(self, archive: Path, size: int) -> None:
        if self.used + size > self.max_bytes:
            raise ArchiveLimitError(
                f"{archive.name}: unpacking it would bring the data to {human_size(self.used + size)}, over the "
                f"limit of {human_size(self.max_bytes)}; if that is expected, pass --max-unpacked-gb "
                f"{int((self.used + size) / 1024**3) + 1} (make data ARGS=...)")
        self.used += size


budget = UnpackBudget()


@contextlib.contextmanager
def limits(max_bytes: float | None = None, max_ratio: float | None = None):
    """Every archive unpacked inside the block shares one budget with these limits (None: the defaults)."""
    global budget
    previous = budget
    budget = UnpackBudget(MAX_UNPACKED_BYTES if max_bytes is None else max_bytes,
                          MAX_RATIO if max_ratio is None else max_ratio)
    try:
        yield budget
    finally:
        budget = previous


def archive_kind(path: Path) -> str | None:
    """'zip', '7z', '7z-split' (first volume), 'gz', or None for anything else (by name)."""
    name = Path(path).name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(".7z"):
        return "7z"
    if _SPLIT_7Z.search(name):
        return "7z-split"
    if name.endswith(".gz") and not name.endswith(".tar.gz"):
        return "gz"
    return None


def is_archive(path: Path) -> bool:
    return archive_kind(path) is not None or bool(_SPLIT_7Z_PART.search(Path(path).name))


def unpacked_name(path: Path) -> str:
    """Name an archive's content would carry when it is a single file: train.csv.zip -> train.csv."""
    name = Path(path).name
    for ext in (".zip", ".7z", ".gz"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return _SPLIT_7Z_PART.sub("", name)


def safe_member(name: str, archive: Path) -> PurePosixPath:
    """An entry's relative path, or StageError if it is absolute or climbs out with '..'."""
    posix = name.replace("\\", "/")
    rel = PurePosixPath(posix)
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix) or ".." in rel.parts:
        raise UnsafeArchiveError(f"{archive.name}: refusing unsafe entry {name!r} (absolute path or '..'); "
                         f"this archive is not a genuine competition download, get the file again from Kaggle")
    return rel


def list_members(archive: Path, password: str | None = None, password_env: str | None = None) -> list[str]:
    """Entry names (files only) of an archive, without extracting it."""
    archive = Path(archive)
    kind = archive_kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                return [i.filename for i in zf.infolist() if not i.is_dir()]
        if kind in ("7z", "7z-split"):
            import py7zr

            with py7zr.SevenZipFile(archive, password=password) as sz:
                return [f.filename for f in sz.list() if not f.is_directory]
    except Exception as exc:  # noqa: BLE001 - translated to one clear line
        if type(exc).__name__ == "PasswordRequired":
            raise _password_needed(archive, password_env) from None
        raise _broken(archive, exc) from exc
    if kind == "gz":
        return [unpacked_name(archive)]
    raise StageError(f"{archive.name}: not an archive this pipeline can unpack (.zip, .7z, .gz)")


def _broken(archive: Path, exc: BaseException) -> StageError:
    if isinstance(exc, StageError):
        return exc
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return StageError(f"disk full while unpacking {archive.name}: free some space (or set PIPELINES_ROOT "
                          f"to a bigger disk) and run again")
    if isinstance(exc, OSError) and exc.errno is not None:  # the disk, not the archive (permissions, ...)
        return StageError(f"cannot unpack {archive.name}: {exc.strerror} ({exc.filename})")
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return BrokenArchiveError(f"{archive.name} is broken or truncated ({reason[:160]}); delete it and download it again")


def extract(archive: Path, dest: Path, password: str | None = None, password_env: str | None = None) -> list[Path]:
    """Unpack ``archive`` into ``dest``; returns the files written (relative to dest).

    .gz holds one file: ``x.csv.gz`` becomes ``dest/x.csv``. Encrypted .7z needs ``password``.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise StageError(f"{archive}: no such archive")
    dest.mkdir(parents=True, exist_ok=True)
    kind = archive_kind(archive)
    log.info("unpacking %s (%s)", archive.name, human_size(archive.stat().st_size))
    try:
        if kind == "zip":
            return _extract_zip(archive, dest)
        if kind == "7z":
            return _extract_7z(archive, dest, password, password_env)
        if kind == "7z-split":
            return _extract_split_7z(archive, dest, password, password_env)
        if kind == "gz":
            return _extract_gz(archive, dest)
    except StageError:
        raise
    except (zipfile.BadZipFile, EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError, ValueError, TypeError,
            KeyError, IndexError, OSError) as exc:
        raise _broken(archive, exc) from exc
    except Exception as exc:  # noqa: BLE001 - py7zr's own errors (Bad7zFile, CrcError, ...)
        if type(exc).__module__.startswith("py7zr"):
            raise _broken(archive, exc) from exc
        raise
    raise StageError(f"{archive.name}: not an archive this pipeline can unpack (.zip, .7z, .gz)")


def _extract_zip(archive: Path, dest: Path) -> list[Path]:
    written = []
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            safe_member(info.filename, archive)
            # A symlink entry (unix mode S_IFLNK) would be written as a file by zipfile, but refuse it anyway.
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise UnsafeArchiveError(f"{archive.name}: refusing link entry {info.filename!r}")
            if info.flag_bits & 0x1:
                raise PasswordError(f"{archive.name} is an encrypted zip, which this pipeline does not unpack: "
                                    f"unpack it by hand and pass the folder as the source")
        files = [i for i in infos if not i.is_dir()]
        for info in files:  # before anything is written: sizes are in the zip's directory
            budget.check_entry(archive, info.filename, info.file_size, info.compress_size)
        budget.add(archive, sum(i.file_size for i in files))
        for info in tqdm(files, desc=f"unzip {archive.name}", unit="file", disable=len(files) < 50, leave=False):
            zf.extract(info, dest)  # zipfile checks each entry's CRC while reading it
            written.append(Path(safe_member(info.filename, archive)))
    return written


def _extract_7z(archive: Path, dest: Path, password: str | None, password_env: str | None = None) -> list[Path]:
    import py7zr

    try:
        sz = py7zr.SevenZipFile(archive, password=password)
    except py7zr.exceptions.PasswordRequired:
        raise _password_needed(archive, password_env) from None
    with sz:
        entries = sz.list()
        for entry in entries:
            safe_member(entry.filename, archive)
            if getattr(entry, "is_symlink", False):
                raise UnsafeArchiveError(f"{archive.name}: refusing link entry {entry.filename!r}")
        if sz.needs_password() and not password:
            raise _password_needed(archive, password_env)
        files = [e for e in entries if not e.is_directory]
        archive_bytes = archive.stat().st_size
        for entry in files:
            size = int(getattr(entry, "uncompressed", 0) or 0)
            # A solid 7z compresses entries together: without an entry's own size, the whole archive bounds it.
            compressed = getattr(entry, "compressed", None)
            budget.check_entry(archive, entry.filename, size, int(compressed) if compressed else archive_bytes)
        budget.add(archive, sum(int(getattr(e, "uncompressed", 0) or 0) for e in files))
        try:
            sz.extractall(path=dest)
        except py7zr.exceptions.PasswordRequired:
            raise _password_needed(archive, password_env) from None
        except (lzma.LZMAError, TypeError, py7zr.exceptions.CrcError) as exc:
            if password:
                raise PasswordError(f"{archive.name}: wrong password or broken archive ({type(exc).__name__}); "
                                    f"check --password{f' / {password_env}' if password_env else ''}, or download "
                                    f"the file again") from exc
            raise
    return [Path(safe_member(e.filename, archive)) for e in entries if not e.is_directory]


def _password_needed(archive: Path, password_env: str | None = None) -> StageError:
    where = f"--password or the {password_env} environment variable" if password_env else "--password"
    return PasswordError(f"{archive.name} is password-protected: pass the password with {where} (Kaggle published "
                         f"it on the competition's forum)")


def _extract_split_7z(first: Path, dest: Path, password: str | None, password_env: str | None = None) -> list[Path]:
    """x.7z.001, x.7z.002, ... are byte-split volumes: join them beside ``dest`` and unpack the whole."""
    stem = _SPLIT_7Z_PART.sub("", first.name)
    parts = sorted((p for p in first.parent.iterdir() if p.name.startswith(stem) and _SPLIT_7Z_PART.search(p.name)),
                   key=lambda p: int(p.name.rsplit(".", 1)[1]))
    numbers = [int(p.name.rsplit(".", 1)[1]) for p in parts]
    if numbers != list(range(1, len(parts) + 1)):
        raise StageError(f"{stem}.7z: volumes {numbers} are not consecutive from 1; download the missing parts")
    joined = dest / f".{stem}.7z.joined"
    try:
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        return _extract_7z(joined, dest, password, password_env)
    finally:
        joined.unlink(missing_ok=True)


def _extract_gz(archive: Path, dest: Path) -> list[Path]:
    name = unpacked_name(archive)
    target = dest / name
    compressed = archive.stat().st_size
    written = 0
    # A .gz does not say its unpacked size reliably (modulo 4 GB): count while writing, stop at a limit.
    try:
        with gzip.open(archive, "rb") as src, open(target, "wb") as out:
            while block := src.read(1 << 22):
                written += len(block)
                budget.check_entry(archive, name, written, compressed)
                budget.add(archive, len(block))
                out.write(block)
    except BaseException:
        target.unlink(missing_ok=True)  # a part of the file is not the file
        raise
    return [Path(name)]


def find_archives(root: Path) -> list[Path]:
    """Archives (nested ones included) anywhere under ``root``, first volumes only for split .7z."""
    found = []
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            p = Path(dirpath) / name
            if archive_kind(p) is not None:
                found.append(p)
    return found


def remove_junk(root: Path) -> None:
    for dirpath, dirs, files in os.walk(root, topdown=True):
        for d in [d for d in dirs if d in JUNK_NAMES]:
            shutil.rmtree(Path(dirpath) / d)
            dirs.remove(d)
        for f in files:
            if f in JUNK_NAMES or f.startswith("._"):
                (Path(dirpath) / f).unlink()


def expand_nested(root: Path, password: str | None = None, max_depth: int = 4,
                  target_dir=None, password_env: str | None = None) -> list[str]:
    """Unpack every archive under ``root`` in place (then delete it), repeating for archives inside
    archives (Kaggle's competition zip holds train.csv.zip). Returns the archives unpacked, relative to root.

    ``target_dir(archive, members) -> folder relative to the archive's`` may redirect where an archive's content lands
    (cervix: additional_Type_1_v2.7z holding Type_1/ goes under additional/). When an unpacked file already
    exists (Kaggle ships both test.csv and test.csv.zip), the existing plain file is kept.
    """
    root = Path(root)
    done: list[str] = []
    for _ in range(max_depth):
        pending = find_archives(root)
        if not pending:
            return done
        for archive in pending:
            into = archive.parent
            if target_dir is not None:
                members = list_members(archive, password, password_env) if archive_kind(archive) != "gz" else []
                sub = target_dir(archive, members)
                if sub:
                    into = archive.parent / sub
            scratch = archive.parent / f".{archive.name}.unpack"
            shutil.rmtree(scratch, ignore_errors=True)
            try:
                extract(archive, scratch, password, password_env)
                _merge(scratch, into, archive)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            for part in _volumes(archive):
                part.unlink()
            done.append(str(archive.relative_to(root)))
        remove_junk(root)
    leftover = find_archives(root)
    if leftover:
        raise StageError(f"archives nested more than {max_depth} deep under {root}: "
                         f"{', '.join(p.name for p in leftover[:3])}; unpack them by hand")
    return done


def _volumes(archive: Path) -> list[Path]:
    if archive_kind(archive) != "7z-split":
        return [archive]
    stem = _SPLIT_7Z_PART.sub("", archive.name)
    return [p for p in archive.parent.iterdir() if p.name.startswith(stem) and _SPLIT_7Z_PART.search(p.name)]


def _merge(src: Path, dest: Path, archive: Path) -> None:
    """Move every file of ``src`` into ``dest``; an identical existing file is fine, a different one is kept."""
    for dirpath, _dirs, files in os.walk(src):
        for name in files:
            f = Path(dirpath) / name
            rel = f.relative_to(src)
            target = dest / rel
            if target.exists():
                if not filecmp.cmp(f, target, shallow=False):
                    log.warning("%s: %s differs from the %s already present; keeping the plain file",
                                archive.name, rel, target.name)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, target)


