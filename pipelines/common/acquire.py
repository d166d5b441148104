"""The ``data`` stage: a competition's raw files, exactly as Kaggle ships them, from one of three sources.

    python -m pipelines data --comp <name> --source sample|kaggle|<path> [--force] [options]

    sample   deterministic synthetic data in the competition's schema (its ``Competition.sample``)
    kaggle   the Kaggle API (credentials needed; rules accepted on the website)
    <path>   a folder or archive downloaded by hand (.zip, .7z, .gz, plain CSVs, image folders)

Whatever the source, the result is ``data/<comp>/<label>/raw/`` (one folder per competition and source, so
the sample never overwrites real data) plus ``manifest.json`` beside it (every file's size and sha256,
counts, class balance, warnings, and the ``excluded`` unreadable images). The data is assembled in a
temporary folder beside ``raw/`` and renamed at the end: an interrupted run leaves nothing that looks
complete. A re-run with the same source and options does nothing (``--force`` re-does it).

Each kind of source is a class in ``pipelines.common.sources``; this module holds what they share: the
Stage, the assembling (nested archives, the competition's layout rules ``Competition.raw``), validation
and the manifest. The sample's options are the competition's (``Competition.sample.options``).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from pipelines import competitions, config
from pipelines.common import archives
from pipelines.common.io import human_size, read_json, sha256_file, write_json
from pipelines.common.log import StageError
from pipelines.common.options import add_options, given_options, option_infos
from pipelines.common.records import now
from pipelines.common.sources import Source, make_source, password_for, raw_hook, resolve_source  # noqa: F401
from pipelines.common.sources import sample_options as _sample_options
from pipelines.common.stage import Stage

log = logging.getLogger(__name__)

CHECKSUM_FILES = ("MANIFEST.sha256", "SHA256SUMS", "sha256sums.txt")


def sample_options(comp: str, size: str = "default", seed: int = config.SEED, **given) -> dict:
    """The sample generator's keyword arguments: its options' defaults, or Kaggle's sizes with size='kaggle',
    then ``given``, then the seed."""
    return _sample_options(competitions.get(comp), size, seed, **given)


# ---------------------------------------------------------------- assembling raw/
def _hoist(root: Path, marker: str) -> None:
    """A wrapper folder (<folder>/<marker> inside a user's zip): move its content up to ``root``."""
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


def _prune(root: Path, rules) -> None:
    """Drop files a hand-made folder or archive carried that are not competition data (notes, checksums)."""
    dropped = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if not rules.keep(rel):
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


def _other_competition(comp, seen: set[str]) -> str | None:
    """The registered competition whose data ``seen`` looks like, when it is not ``comp``'s."""
    if comp.raw.looks_like(seen):
        return None
    for name in competitions.names():
        if name == comp.name:
            continue
        try:
            if competitions.get(name).raw.looks_like(seen):
                return name
        except Exception as exc:  # noqa: BLE001 - another competition's rules must not hide this one's error
            log.debug("could not ask %s whether the data is its own: %s", name, exc)
    return None


def _validate(comp, root: Path, source: str, seen: set[str], shown: str | None = None) -> dict:
    """``comp.raw.validate(root)``; its messages name ``shown`` (what the user gave) instead of the temp
    folder ``root``, which is deleted when the stage stops."""
    try:
        return comp.raw.validate(root)
    except StageError as exc:
        other = _other_competition(comp, seen)
        if other is not None:
            raise StageError(f"{source} looks like the {other} competition's data, not {comp.name}'s: "
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


def summary(manifest: dict, rules) -> list[str]:
    lines = [f"data {manifest['comp']}/{manifest['source']}: {manifest['n_files']:,} files, "
             f"{human_size(manifest['total_bytes'])} in {manifest['raw_dir']}"]
    lines += [f"  {line}" for line in rules.summary_lines(manifest)]
    sums = manifest.get("checksums")
    if sums:
        lines.append(f"  {sums['verified']:,} files match {sums['file']}"
                     + (f", {len(sums['mismatched'])} differ" if sums["mismatched"] else ""))
    if manifest.get("warnings"):
        lines.append(f"  {len(manifest['warnings'])} warning(s): {manifest['warnings'][0]}"
                     + (" ..." if len(manifest["warnings"]) > 1 else ""))
    lines.append(f"  manifest: {manifest['manifest_path']}")
    return lines


def _sample_flags(comp) -> list[str]:
    """The command-line flags of the competition's sample options (``--size`` among them)."""
    if comp.sample is None:
        return []
    return [info.flag for info in option_infos(comp.sample.options)] + ["--size"]


# ---------------------------------------------------------------- the stage
def acquire(comp: str, source: str, *, force: bool = False, seed: int = config.SEED, size: str = "default",
            password: str | None = None, files: list[str] | None = None, api=None,
            max_unpacked_gb: float | None = None, max_ratio: float | None = None, **sample_given) -> dict:
    """Build data/<comp>/<label>/raw and manifest.json from ``source``; returns the manifest.
    ``sample_given``: the sample's options (fields of ``Competition.sample.options``; None: the default)."""
    competition = competitions.get(comp)
    src = make_source(competition, source, seed=seed, size=size, sample_given=sample_given, files=files, api=api,
                      force=force)
    out_dir = config.source_dir(comp, source)
    raw, manifest_path = out_dir / "raw", out_dir / "manifest.json"
    if src.kind != "sample" and (any(v is not None for v in sample_given.values()) or size != "default"):
        flags = "/".join(_sample_flags(competition)) or "the sample options"
        log.warning("%s only shape the sample; ignored for %s", flags, src.label)
    if files and src.kind != "kaggle":
        log.warning("--files only applies to --source kaggle; ignored")
    params = src.params()
    # raw/ itself is a dependency: if anything changed it after the run, the stage is no longer up to date.
    stage = Stage("data", out_dir, deps=[raw] + src.deps(), params=params, outs=["raw", "manifest.json"])
    if not force and stage.up_to_date():
        manifest = read_json(manifest_path)
        log.info(stage.skip_message())
        print("\n".join(summary(manifest, competition.raw)))
        return manifest
    log.info("data %s/%s: %s", comp, src.label, "forced" if force else stage.why_stale())
    src.announce(out_dir)
    env = competition.archive_password_env
    password = password or (os.environ.get(env) if env else None) or None

    out_dir.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(out_dir)
    stage.lock_path.unlink(missing_ok=True)  # from here on the old raw/ no longer counts as complete
    tmp = out_dir / f".raw.tmp-{os.getpid()}"
    unpack_limits = archives.limits(None if max_unpacked_gb is None else max_unpacked_gb * 1024**3, max_ratio)
    try:
        unpack_limits.__enter__()
        tmp.mkdir()
        report, file_info, checksums = _assemble(competition, src, tmp, out_dir, password)
        _install(tmp, raw, out_dir, manifest_path, file_info, params, comp, src.label)
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

    manifest = _manifest(competition, src, params, report, file_info, checksums, raw, manifest_path)
    write_json(manifest_path, manifest)
    if src.kind == "local":  # how later stages given the same path find this folder (config.source_label)
        write_json(out_dir / config.SOURCE_FILE, {"label": src.label, "path": str(src.path)})
    stage.done({"manifest_sha256": sha256_file(manifest_path)})
    src.finished(out_dir)
    print("\n".join(summary(manifest, competition.raw)))
    return manifest


def _assemble(comp, src: Source, tmp: Path, out_dir: Path, password: str | None) -> tuple[dict, dict, dict | None]:
    """The source's files in ``tmp`` in Kaggle's layout, validated: (report, file info, checksums)."""
    rules = comp.raw
    seen, password = src.fill(tmp, password, out_dir)
    password = password_for(rules, tmp, password)
    try:
        archives.expand_nested(tmp, password, target_dir=raw_hook(rules, "archive_target"),
                               password_env=comp.archive_password_env)
    except archives.BrokenArchiveError as exc:
        raise src.damaged_nested(exc, out_dir) from None
    archives.remove_junk(tmp)
    _hoist(tmp, rules.marker)
    raw_hook(rules, "normalize")(tmp)
    seen |= _names_under(tmp)
    if src.prunes:
        _prune(tmp, rules)
    report = _validate(comp, tmp, src.source, seen, shown=src.shown(out_dir / "raw", _display))
    file_info = _hash_files(tmp)
    return report, file_info, _verify_checksums(src.path, file_info)


def _install(tmp: Path, raw: Path, out_dir: Path, manifest_path: Path, file_info: dict, params: dict, comp: str,
             label: str) -> None:
    """Rename the assembled folder to raw/, unless raw/ already holds exactly these files."""
    if _same_content(manifest_path, raw, file_info, params):
        # A fresh copy of the same files (a re-created data folder, a re-downloaded archive) has new
        # mtimes only: keeping the old raw/ keeps its fingerprint, so the features and the trained
        # models built from it stay up to date instead of being rebuilt from identical data.
        log.info("data %s/%s: same files as the last import (sha256 of all %d); raw/ kept as it was", comp,
                 label, len(file_info))
        return
    old = None
    if raw.exists():
        old = out_dir / f".raw.old-{os.getpid()}"
        os.replace(raw, old)
    os.replace(tmp, raw)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _manifest(comp, src: Source, params: dict, report: dict, file_info: dict, checksums: dict | None, raw: Path,
              manifest_path: Path) -> dict:
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
    return {
        "comp": comp.name,
        "competition": comp.slug,
        "source": src.label,
        "label": src.label,
        "source_kind": src.kind,
        "source_path": str(src.path) if src.path else None,
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


def add_arguments(parser, comp: str | None = None) -> None:
    """The stage's options; with ``comp``, also that competition's sample options (none without a sample)."""
    known = competitions.get(comp) if comp else None
    g = parser.add_argument_group("data stage")
    g.add_argument("--force", action="store_true", help="re-do the stage even if it is up to date")
    env = known.archive_password_env if known else None
    g.add_argument("--password", help="password of encrypted .7z archives" + (f"; or set {env}" if env else ""))
    g.add_argument("--max-unpacked-gb", type=float, default=None,
                   help=f"stop when archives would unpack to more than this many GB in all (default "
                        f"{archives.MAX_UNPACKED_BYTES / 1024**3:.0f})")
    g.add_argument("--max-ratio", type=float, default=None,
                   help=f"refuse an archive entry that unpacks to more than this many times its compressed size "
                        f"(default {archives.MAX_RATIO:.0f}; a zip bomb reaches thousands)")
    g.add_argument("--files", nargs="+", metavar="NAME",
                   help="kaggle: download only these competition files (e.g. train.7z test.7z "
                        "sample_submission_stg1.csv.zip) instead of everything")
    if known is not None and known.sample is not None:
        s = parser.add_argument_group(f"{known.name} sample (--source sample)")
        s.add_argument("--size", choices=["default", "kaggle"], default="default",
                       help="sample size: default (seconds) or kaggle (the competition's sizes)")
        add_options(s, known.sample.options)


def main(args) -> int:
    comp = competitions.get(args.comp)
    given = given_options(args, comp.sample.options) if comp.sample is not None else {}
    acquire(args.comp, args.source, force=args.force, seed=args.seed, size=getattr(args, "size", "default"),
            password=args.password, files=args.files, max_unpacked_gb=args.max_unpacked_gb,
            max_ratio=args.max_ratio, **given)
    return 0
