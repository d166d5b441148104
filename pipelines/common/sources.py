"""The data stage's sources, one class per kind: what each puts into the temporary folder the stage assembles.

    SampleSource   the competition's built-in synthetic sample (``Competition.sample``)
    KaggleSource   the Kaggle API download of the competition (``Competition.slug``)
    LocalSource    a folder or archive the user downloaded by hand

``pipelines.common.acquire`` owns what every source shares: the Stage (params, deps), the temporary folder
and its atomic rename, nested archives, the competition's layout rules (``Competition.raw``), validation,
the manifest. A source says what identifies it (``params``, ``deps``), writes its files (``fill``) and
words the errors that depend on where the files came from.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from tqdm import tqdm

from pipelines import config
from pipelines.common import archives, kaggle_io
from pipelines.common.competition import OPTIONAL_RAW_HOOKS
from pipelines.common.log import StageError

log = logging.getLogger(__name__)


def raw_hook(rules, name: str):
    """An optional hook of a competition's raw rules (``archive_target``, ``normalize``, ``archive_password``),
    or its do-nothing default when the rules do not define it."""
    hook = getattr(rules, name, None)
    return hook if callable(hook) else OPTIONAL_RAW_HOOKS[name]


def resolve_source(source: str) -> tuple[str, Path | None]:
    """('sample'|'kaggle', None) or ('local', absolute path)."""
    if source in ("sample", "kaggle"):
        return source, None
    path = Path(source).expanduser()
    if not path.exists():
        raise StageError(f"--source {source}: no such file or folder; use sample, kaggle, or the path of the "
                         f"competition files you downloaded (a folder, or .zip/.7z/.gz archives)")
    return "local", path.resolve()


def sample_of(comp):
    """The competition's SampleGenerator; a competition without one refuses ``--source sample`` in one line."""
    if comp.sample is None:
        raise StageError(f"--source sample: the {comp.name} competition has no built-in sample; use --source kaggle "
                         f"or the path of the competition files you downloaded")
    return comp.sample


def sample_options(comp, size: str = "default", seed: int = config.SEED, **given) -> dict:
    """The sample generator's options: its options dataclass's defaults, or Kaggle's sizes with size='kaggle',
    then ``given`` (None: not given), then the seed."""
    sample = sample_of(comp)
    options = dataclasses.asdict(sample.options())
    if size == "kaggle":
        options.update(sample.kaggle_size)
    elif size != "default":
        raise StageError(f"--size {size}: use default or kaggle")
    options.update({k: v for k, v in given.items() if v is not None and k in options})
    options["seed"] = seed
    return options


def password_for(rules, folder: Path, password: str | None) -> str | None:
    """The given password, else the one the competition's files carry in ``folder`` (its raw rules'
    ``archive_password``: a password file published beside an encrypted archive), else None."""
    if password:
        return password
    return raw_hook(rules, "archive_password")(folder) or None


def unpack_into(archive: Path, root: Path, password: str | None, comp) -> None:
    """Unpack one archive into ``root`` (or the sub-folder the competition wants, e.g. additional/)."""
    members = []
    if archives.archive_kind(archive) in ("zip", "7z"):
        members = archives.list_members(archive, password, comp.archive_password_env)
    sub = raw_hook(comp.raw, "archive_target")(archive, members)
    archives.extract(archive, root / sub if sub else root, password, comp.archive_password_env)


class Source:
    """One kind of data source of a competition. ``fill`` writes its files into the temporary folder."""

    kind = ""
    prunes = False  # drop files that are not competition data (a user's folder carries notes, checksums)

    def __init__(self, comp, source: str, path: Path | None = None):
        self.comp, self.source, self.path = comp, source, path
        self.label = config.source_label(source)

    def params(self) -> dict:
        """What identifies this source's data (the Stage's params; recorded in the manifest)."""
        raise NotImplementedError

    def deps(self) -> list[Path]:
        return [self.path] if self.path else []

    def announce(self, out_dir: Path) -> None:
        """Log lines before the work starts."""

    def fill(self, tmp: Path, password: str | None, out_dir: Path) -> tuple[set[str], str | None]:
        """Write the source's files into ``tmp``; returns the names seen (to recognise a wrong competition)
        and the password for the archives nested inside."""
        raise NotImplementedError

    def damaged_nested(self, exc: Exception, out_dir: Path) -> StageError:
        return StageError(f"an archive inside {self.source} is damaged: {exc}")

    def finished(self, out_dir: Path) -> None:
        """After the manifest is written."""

    def shown(self, raw: Path, display) -> str:
        """What messages name instead of the temporary folder (deleted when the stage stops)."""
        return display(raw)


class SampleSource(Source):
    kind = "sample"

    def __init__(self, comp, source: str, options: dict):
        super().__init__(comp, source)
        self.sample = sample_of(comp)
        self.options = options

    def params(self) -> dict:
        return {"kind": "sample", "generator": self.sample.version, **self.options}

    def fill(self, tmp, password, out_dir):
        log.info("generating the %s sample: %s", self.comp.name, ", ".join(f"{k}={v}" for k, v in self.options.items()))
        options = dict(self.options)
        self.sample.generate(tmp, seed=options.pop("seed"), **options)
        return set(), password


class KaggleSource(Source):
    kind = "kaggle"

    def __init__(self, comp, source: str, files: list[str] | None = None, api=None, force: bool = False):
        super().__init__(comp, source)
        self.files, self.api, self.force = files, api, force

    def params(self) -> dict:
        return {"kind": "kaggle", "competition": self.comp.slug, "files": sorted(self.files or []) or None}

    def fill(self, tmp, password, out_dir):
        downloads = out_dir / "downloads"
        got = kaggle_io.download(self.comp.name, downloads, api=self.api, files=self.files, force=self.force)
        password = password_for(self.comp.raw, downloads, password)
        seen = set()
        for f in got:
            seen.add(f.name)
            if archives.archive_kind(f) is not None:
                try:
                    unpack_into(f, tmp, password, self.comp)
                except archives.BrokenArchiveError:
                    f.unlink()  # a truncated download must not be "resumed" as if it were complete
                    raise StageError(f"{f.name} from Kaggle is broken or truncated; it was deleted: run the "
                                     f"same command again to download it again") from None
            elif not archives.is_archive(f):
                shutil.copy2(f, tmp / f.name)
        return seen, password

    def damaged_nested(self, exc, out_dir):
        shutil.rmtree(out_dir / "downloads", ignore_errors=True)
        return StageError(f"an archive inside the Kaggle download is damaged ({exc}); the download was "
                          f"deleted: run the same command again to download it again")

    def finished(self, out_dir):
        shutil.rmtree(out_dir / "downloads", ignore_errors=True)  # unpacked into raw/; the archives would double the disk use


class LocalSource(Source):
    kind = "local"
    prunes = True

    def params(self) -> dict:
        return {"kind": "local", "path": str(self.path)}

    def announce(self, out_dir):
        own = f"local-{config.path_slug(self.source)}"
        if self.label != own:
            log.info("data/%s/%s holds %s: %s gets its own folder, %s (use SOURCE=%s or SOURCE=%s later)",
                     self.comp.name, own, config.label_owner(own), self.path, self.label, self.source, self.label)

    def fill(self, tmp, password, out_dir):
        return self.import_into(tmp, password_for(self.comp.raw, self.path, password)), password

    def shown(self, raw, display):
        return str(self.path)

    def import_into(self, root: Path, password: str | None) -> set[str]:
        """Copy or unpack the competition's files from the user's folder or archive into ``root``.

        Top-level entries that are not competition data (checksum lists, notes, other competitions' archives)
        are skipped. Returns every name seen, so a wrong competition can be recognised.
        """
        src, rules, env = self.path, self.comp.raw, self.comp.archive_password_env
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
                if rules.is_data_name(f"{entry.name}/x"):
                    _copy_tree(entry, root / entry.name)
                else:
                    ignored.append(entry.name + "/")
            elif kind is not None:
                members = archives.list_members(entry, password, env) if kind in ("zip", "7z") else []
                seen.update(members)
                if entry == src or rules.is_data_name(entry.name) or any(rules.is_data_name(m) for m in members):
                    unpack_into(entry, root, password, self.comp)
                else:
                    ignored.append(entry.name)
            elif archives.is_archive(entry):
                continue  # x.7z.002...: unpacked with x.7z.001
            elif rules.is_data_name(entry.name):
                shutil.copy2(entry, root / entry.name)
            else:
                ignored.append(entry.name)
        if ignored:
            log.info("ignored (not %s competition data): %s", self.comp.name,
                     ", ".join(ignored[:6]) + (" ..." if len(ignored) > 6 else ""))
        return seen


def _copy_tree(src: Path, dest: Path) -> int:
    files = [p for p in sorted(src.rglob("*")) if p.is_file() and p.name not in archives.JUNK_NAMES]
    for f in tqdm(files, desc=f"copy {src.name}/", unit="file", disable=len(files) < 200, leave=False):
        target = dest / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    return len(files)


def make_source(comp, source: str, *, seed: int = config.SEED, size: str = "default", sample_given: dict | None = None,
                files: list[str] | None = None, api=None, force: bool = False) -> Source:
    """The Source object for ``--source`` (sample, kaggle, or a path)."""
    kind, path = resolve_source(source)
    if kind == "sample":
        return SampleSource(comp, source, sample_options(comp, size, seed, **(sample_given or {})))
    if kind == "kaggle":
        return KaggleSource(comp, source, files=files, api=api, force=force)
    return LocalSource(comp, source, path)
