"""The ``data`` stage: a competition's raw files, exactly as Kaggle ships them, from one of three sources.

    python -m pipelines data --comp quora|cervix --source sample|kaggle|<path> [--force] [options]

    sample   deterministic synthetic data in the competition's schema (pipelines.<comp>.data.generate_sample)
    kaggle   the Kaggle API (credentials needed; rules accepted on the website)
    <path>   a folder or archive downloaded by hand (.zip, .7z, .gz, plain CSVs, image folders)

Whatever the source, the result is ``data/<comp>/<label>/raw/`` (one folder per competition and source, so
the sample never overwrites real data) plus ``manifest.json`` beside it (every file's size and sha256,
counts, class balance, warnings, and the ``excluded`` unreadable images). The data is assembled in a
temporary folder beside ``raw/`` and renamed at the end: an interrupted run leaves nothing that looks
complete. A re-run with the same source and options does nothing (``--force`` re-does it).
"""
from __future__ import annotations

import contextlib
import errno
import importlib
import inspect
import logging
import os
import shutil
from pathlib import Path
from types import ModuleType

from tqdm import tqdm

from pipelines import config
from pipelines.common import archives, kaggle_io
from pipelines.common.io import read_json, sha256_file, write_json
from pipelines.common.log import StageError
from pipelines.common.records import now
from pipelines.common.stage import Stage

log = logging.getLogger(__name__)

CHECKSUM_FILES = ("MANIFEST.sha256", "SHA256SUMS", "sha256sums.txt")


def comp_module(comp: str) -> ModuleType:
    """pipelines.<comp>.data: generate_sample, validate, and the competition's file-name rules."""
    return importlib.import_module(f"pipelines.{config.check_comp(comp)}.data")


def resolve_source(source: str) -> tuple[str, Path | None]:
    """('sample'|'kaggle', None) or ('local', absolute path)."""
    if source in ("sample", "kaggle"):
        return source, None
    path = Path(source).expanduser()
    if not path.exists():
        raise StageError(f"--source {source}: no such file or folder; use sample, kaggle, or the path of the "
                         f"competition files you downloaded (a folder, or .zip/.7z/.gz archives)")
    return "local", path.resolve()


def sample_options(comp: str, size: str = "default", seed: int = config.SEED, **given) -> dict:
    """generate_sample's keyword arguments: its defaults, or Kaggle's sizes with size='kaggle', then ``given``."""
    mod = comp_module(comp)
    params = inspect.signature(mod.generate_sample).parameters
    options = {name: p.default for name, p in params.items() if p.default is not inspect.Parameter.empty}
    if size == "kaggle":
        options.update(mod.KAGGLE_SIZE)
    elif size != "default":
        raise StageError(f"--size {size}: use default or kaggle")
    options.update({k: v for k, v in given.items() if v is not None and k in params})
    options["seed"] = seed
    return options


# ---------------------------------------------------------------- assembling raw/
def _copy_tree(src: Path, dest: Path) -> int:
    files = [p for p in sorted(src.rglob("*")) if p.is_file() and p.name not in archives.JUNK_NAMES]
    for f in tqdm(files, desc=f"copy {src.name}/", unit="file", disable=len(files) < 200, leave=False):
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    return len(files)


def _password(mod: ModuleType, folder: Path, password: str | None) -> str | None:
    """The given password, else the one the competition's files carry in ``folder`` (``archive_password``
    of pipelines.<comp>.data: a password file published beside an encrypted archive), else None."""
    if password or not hasattr(mod, "archive_password"):
        return password
    return mod.archive_password(folder) or None


def _unpack_into(archive: Path, root: Path, password: str | None, mod: ModuleType) -> None:
    """Unpack one archive into ``root`` (or the sub-folder the competition wants, e.g. additional/)."""
    members = []
    if archives.archive_kind(archive) in ("zip", "7z"):
        members = archives.list_members(archive, password)
    sub = mod.archive_target(archive, members)
    archives.extract(archive, root / sub if sub else root, password)


def _import_local(src: Path, root: Path, mod: ModuleType, password: str | None) -> set[str]:
    """Copy or unpack the competition's files from a user's folder or archive into ``root``.

    Top-level entries that are not competition data (checksum lists, notes, other competitions' archives) are
    skipped. Returns every name seen, so a wrong competition can be recognised.
    """
    entries = [src] if src.is_file() else sorted(src.iterdir())
    seen: set[str] = set()
    ignored: list[str] = []
    for entry in entries:
        seen.add(entry.name)
        if entry.name in archives.JUNK_NAMES:
            continue
        kind = archives.archive_kind(entry)
        if entry.is_dir():
            seen.update(p.relative_to(entry.parent).as_posix() for p in entry.iterdir())
            if mod.is_data_name(f"{entry.name}/x"):
                _copy_tree(entry, root / entry.name)
            else:
                ignored.append(entry.name + "/")
        elif kind is not None:
            members = archives.list_members(entry, password) if kind in ("zip", "7z") else []
            seen.update(members)
            if entry == src or mod.is_data_name(entry.name) or any(mod.is_data_name(m) for m in members):
                _unpack_into(entry, root, password, mod)
            else:
                ignored.append(entry.name)
        elif archives.is_archive(entry):
            continue  # x.7z.002...: unpacked with x.7z.001
        elif mod.is_data_name(entry.name):
            shutil.copy2(entry, root / entry.name)
        else:
            ignored.append(entry.name)
    if ignored:
        log.info("ignored (not %s competition data): %s", mod.__name__.split(".")[1],
                 ", ".join(ignored[:6]) + (" ..." if len(ignored) > 6 else ""))
    return seen


def _hoist(root: Path, marker: str) -> None:
    """A wrapper folder (quora/train.csv inside a user's zip): move its content up to ``root``."""
    if (root / marker).exists():
        return
    found = [p for p in root.rglob(marker) if len(p.relative_to(root).parts) <= 3]
    parents = {p.parent for p in found}
    if len(parents) != 1:
        return
    wrapper = parents.pop()
    for child in sorted(wrapper.iterdir()):
        if not (root / child.name).exists():
            child.rename(root / child.name)
    top = root / wrapper.relative_to(root).parts[0]
    if top.is_dir() and not any(p.is_file() for p in top.rglob("*")):
        shutil.rmtree(top)


def _prune(root: Path, mod: ModuleType) -> None:
    """Drop files a hand-made folder or archive carried that are not competition data (notes, checksums)."""
    dropped = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if not mod.keep(rel):
            f.unlink()
            dropped.append(rel)
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    if dropped:
        log.info("left out %d file(s) that are not competition data, e.g. %s", len(dropped), ", ".join(dropped[:3]))


def _names_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


def _hash_files(root: Path) -> dict:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    out = {}
    for f in tqdm(files, desc="sha256", unit="file", disable=len(files) < 200, leave=False):
        out[f.relative_to(root).as_posix()] = {"size": f.stat().st_size, "sha256": sha256_file(f)}
    return out


def _verify_checksums(src: Path | None, files: dict) -> dict | None:
    """Compare with a checksum list shipped beside the user's data (sha256sum format), when there is one."""
    if src is None or not src.is_dir():
        return None
    listing = next((src / n for n in CHECKSUM_FILES if (src / n).is_file()), None)
    if listing is None:
        return None
    verified, mismatched = 0, []
    for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            continue
        digest, rel = parts[0].lower(), parts[1].lstrip("*").removeprefix("./")
        if rel in files:
            if files[rel]["sha256"] == digest:
                verified += 1
            else:
                mismatched.append(rel)
    if mismatched:
        log.warning("%d file(s) differ from %s, e.g. %s: the copy you have may be damaged",
                    len(mismatched), listing.name, ", ".join(mismatched[:3]))
    return {"file": listing.name, "verified": verified, "mismatched": mismatched}


def _same_content(manifest_path: Path, raw: Path, file_info: dict, params: dict) -> bool:
    """True when raw/ holds exactly the files (names, sizes, sha256) the new import produced."""
    if not raw.is_dir() or not manifest_path.exists():
        return False
    try:
        previous = read_json(manifest_path)
    except (OSError, ValueError):
        return False
    if previous.get("files") != file_info or previous.get("params") != params:
        return False
    return _hash_files(raw) == file_info  # raw/ itself may have been edited since (it is a dependency)


def _clean_leftovers(out_dir: Path) -> None:
    """Remove temp folders of interrupted runs (whose process is gone)."""
    for p in out_dir.glob(".raw.*-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            pid = None
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _validate(mod: ModuleType, root: Path, comp: str, source: str, seen: set[str], shown: str | None = None) -> dict:
    """``mod.validate(root)``; its messages name ``shown`` (what the user gave) instead of the temp folder
    ``root``, which is deleted when the stage stops."""
    try:
        return mod.validate(root)
    except StageError as exc:
        other = "cervix" if comp == "quora" else "quora"
        if comp_module(other).looks_like(seen) and not mod.looks_like(seen):
            raise StageError(f"{source} looks like the {other} competition's data, not {comp}'s: "
                             f"use --comp {other} (make data COMP={other} SOURCE=...)") from exc
        message = str(exc)
        if shown and str(root) in message:
            raise type(exc)(message.replace(str(root), shown)) from exc
        raise


def _display(path: Path) -> str:
    """A path relative to the project when inside it (the manifest stays valid if the project moves)."""
    try:
        return Path(path).resolve().relative_to(config.ROOT.resolve()).as_posix()
    except ValueError:
        return str(path)


def summary(manifest: dict, mod: ModuleType) -> list[str]:
    lines = [f"data {manifest['comp']}/{manifest['source']}: {manifest['n_files']:,} files, "
             f"{archives.human_size(manifest['total_bytes'])} in {manifest['raw_dir']}"]
    lines += [f"  {line}" for line in mod.summary_lines(manifest)]
    sums = manifest.get("checksums")
    if sums:
        lines.append(f"  {sums['verified']:,} files match {sums['file']}"
                     + (f", {len(sums['mismatched'])} differ" if sums["mismatched"] else ""))
    if manifest.get("warnings"):
        lines.append(f"  {len(manifest['warnings'])} warning(s): {manifest['warnings'][0]}"
                     + (" ..." if len(manifest["warnings"]) > 1 else ""))
    lines.append(f"  manifest: {manifest['manifest_path']}")
    return lines


# ---------------------------------------------------------------- the stage
def acquire(comp: str, source: str, *, force: bool = False, seed: int = config.SEED, size: str = "default",
            n_train: int | None = None, n_test: int | None = None, n_per_class: int | None = None,
            image_size: int | None = None, password: str | None = None, files: list[str] | None = None,
            api=None, max_unpacked_gb: float | None = None, max_ratio: float | None = None) -> dict:
    """Build data/<comp>/<label>/raw and manifest.json from ``source``; returns the manifest."""
    mod = comp_module(comp)
    kind, path = resolve_source(source)
    label = config.source_label(source)
    out_dir = config.source_dir(comp, source)
    raw = out_dir / "raw"
    manifest_path = out_dir / "manifest.json"
    password = password or os.environ.get(archives.PASSWORD_ENV) or None
    sample_given = dict(n_train=n_train, n_test=n_test, n_per_class=n_per_class, image_size=image_size)
    if kind == "sample":
        options = sample_options(comp, size, seed, **sample_given)
        params = {"kind": "sample", "generator": mod.GENERATOR_VERSION, **options}
    else:
        if any(v is not None for v in sample_given.values()) or size != "default":
            log.warning("--n-train/--n-test/--n-per-class/--image-size/--size only shape the sample; ignored for %s",
                        label)
        if kind == "kaggle":
            params = {"kind": "kaggle", "competition": config.COMPETITIONS[comp], "files": sorted(files or []) or None}
        else:
            params = {"kind": "local", "path": str(path)}
    if files and kind != "kaggle":
        log.warning("--files only applies to --source kaggle; ignored")
    # raw/ itself is a dependency: if anything changed it after the run, the stage is no longer up to date.
    stage = Stage("data", out_dir, deps=[raw] + ([path] if path else []), params=params,
                  outs=["raw", "manifest.json"])
    if not force and stage.up_to_date():
        manifest = read_json(manifest_path)
        log.info(stage.skip_message())
        print("\n".join(summary(manifest, mod)))
        return manifest
    log.info("data %s/%s: %s", comp, label, "forced" if force else stage.why_stale())
    if kind == "local" and label != f"local-{config.path_slug(source)}":
        log.info("data/%s/local-%s holds %s: %s gets its own folder, %s (use SOURCE=%s or SOURCE=%s later)",
                 comp, config.path_slug(source), config.label_owner(f"local-{config.path_slug(source)}"), path,
                 label, source, label)

    out_dir.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(out_dir)
    stage.lock_path.unlink(missing_ok=True)  # from here on the old raw/ no longer counts as complete
    tmp = out_dir / f".raw.tmp-{os.getpid()}"
    downloads = out_dir / "downloads"
    unpack_limits = archives.limits(None if max_unpacked_gb is None else max_unpacked_gb * 1024**3, max_ratio)
    try:
        unpack_limits.__enter__()
        tmp.mkdir()
        seen: set[str] = set()
        checksums = None
        if kind == "sample":
            log.info("generating the %s sample: %s", comp, ", ".join(f"{k}={v}" for k, v in options.items()))
            mod.generate_sample(tmp, **options)
        elif kind == "kaggle":
            got = kaggle_io.download(comp, downloads, api=api, files=files, force=force)
            password = _password(mod, downloads, password)
            for f in got:
                seen.add(f.name)
                if archives.archive_kind(f) is not None:
                    try:
                        _unpack_into(f, tmp, password, mod)
                    except archives.BrokenArchiveError:
                        f.unlink()  # a truncated download must not be "resumed" as if it were complete
                        raise StageError(f"{f.name} from Kaggle is broken or truncated; it was deleted: run the "
                                         f"same command again to download it again") from None
                elif not archives.is_archive(f):
                    shutil.copy2(f, tmp / f.name)
        else:
            seen = _import_local(path, tmp, mod, _password(mod, path, password))
        password = _password(mod, tmp, password)
        try:
            archives.expand_nested(tmp, password, target_dir=mod.archive_target)
        except archives.BrokenArchiveError as exc:
            if kind == "kaggle":
                shutil.rmtree(downloads, ignore_errors=True)
                raise StageError(f"an archive inside the Kaggle download is damaged ({exc}); the download was "
                                 f"deleted: run the same command again to download it again") from None
            raise StageError(f"an archive inside {source} is damaged: {exc}") from None
        archives.remove_junk(tmp)
        _hoist(tmp, mod.MARKER)
        mod.normalize(tmp)
        seen |= _names_under(tmp)
        if kind == "local":
            _prune(tmp, mod)
        report = _validate(mod, tmp, comp, source, seen, shown=str(path) if path else _display(raw))
        file_info = _hash_files(tmp)
        checksums = _verify_checksums(path, file_info)

        if _same_content(manifest_path, raw, file_info, params):
            # A fresh copy of the same files (a re-created data folder, a re-downloaded archive) has new
            # mtimes only: keeping the old raw/ keeps its fingerprint, so the features and the trained
            # models built from it stay up to date instead of being rebuilt from identical data.
            log.info("data %s/%s: same files as the last import (sha256 of all %d); raw/ kept as it was", comp,
                     label, len(file_info))
        else:
            old = None
            if raw.exists():
                old = out_dir / f".raw.old-{os.getpid()}"
                os.replace(raw, old)
            os.replace(tmp, raw)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StageError(f"disk full while writing {out_dir}: free some space (or set PIPELINES_ROOT to a "
                             f"bigger disk) and run again") from None
        raise
    finally:
        unpack_limits.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            out_dir.rmdir()  # only if the failed run left it empty

    # Identical data re-done (--force on the same sample) keeps its creation time, so manifest.json stays
    # byte-identical and runs that recorded its hash are not reported as trained on other data.
    created = now()
    try:
        previous = read_json(manifest_path) if manifest_path.exists() else {}
        if previous.get("files") == file_info and previous.get("params") == params:
            created = previous.get("created", created)
    except (OSError, ValueError):
        pass
    warnings = list(report.get("warnings", []))
    if checksums and checksums["mismatched"]:
        warnings.append(f"{len(checksums['mismatched'])} file(s) differ from {checksums['file']}")
    manifest = {
        "comp": comp,
        "competition": config.COMPETITIONS[comp],
        "source": label,
        "label": label,
        "source_kind": kind,
        "source_path": str(path) if path else None,
        "params": params,
        "created": created,
        "raw_dir": _display(raw),
        "manifest_path": _display(manifest_path),
        "n_files": len(file_info),
        "total_bytes": sum(v["size"] for v in file_info.values()),
        "files": file_info,
        "checksums": checksums,
        **{k: v for k, v in report.items() if k != "warnings"},
        "warnings": warnings,
    }
    write_json(manifest_path, manifest)
    if kind == "local":  # how later stages given the same path find this folder (config.source_label)
        write_json(out_dir / config.SOURCE_FILE, {"label": label, "path": str(path)})
    stage.done({"manifest_sha256": sha256_file(manifest_path)})
    if kind == "kaggle":
        shutil.rmtree(downloads, ignore_errors=True)  # unpacked into raw/; the archives would double the disk use
    print("\n".join(summary(manifest, mod)))
    return manifest


def add_arguments(parser) -> None:
    g = parser.add_argument_group("data stage")
    g.add_argument("--force", action="store_true", help="re-do the stage even if it is up to date")
    g.add_argument("--size", choices=["default", "kaggle"], default="default",
                   help="sample size: default (seconds) or kaggle (the competition's sizes)")
    g.add_argument("--n-train", type=int, help="sample: Quora training pairs (default 4000)")
    g.add_argument("--n-test", type=int, help="sample: Quora test pairs (default 1500) / cervix test images (30)")
    g.add_argument("--n-per-class", type=int, help="sample: cervix training images per class (default 40)")
    g.add_argument("--image-size", type=int, help="sample: cervix image side in pixels (default 192)")
    g.add_argument("--password", help=f"password of encrypted .7z archives (cervix test_stg2.7z); "
                                      f"or set {archives.PASSWORD_ENV}")
    g.add_argument("--max-unpacked-gb", type=float, default=None,
                   help=f"stop when archives would unpack to more than this many GB in all (default "
                        f"{archives.MAX_UNPACKED_BYTES / 1024**3:.0f})")
    g.add_argument("--max-ratio", type=float, default=None,
                   help=f"refuse an archive entry that unpacks to more than this many times its compressed size "
                        f"(default {archives.MAX_RATIO:.0f}; a zip bomb reaches thousands)")
    g.add_argument("--files", nargs="+", metavar="NAME",
                   help="kaggle: download only these competition files (e.g. train.7z test.7z "
                        "sample_submission_stg1.csv.zip) instead of everything")


def main(args) -> int:
    acquire(args.comp, args.source, force=args.force, seed=args.seed, size=args.size, n_train=args.n_train,
            n_test=args.n_test, n_per_class=args.n_per_class, image_size=args.image_size, password=args.password,
            files=args.files, max_unpacked_gb=args.max_unpacked_gb, max_ratio=args.max_ratio)
    return 0
