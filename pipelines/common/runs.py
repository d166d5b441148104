"""Runs: a model with its options and seed, one folder each, many per model side by side.

    models/<comp>/<source>/<model>/<run>/    one run (the CV engine's files, identity.json)
    models/<comp>/<source>/blend/            the blend stage's output (not a model's run)
    models/<comp>/<source>/.tune/            a tuner's studies and trial folders (dot-folders are no runs)

A run is named by its **key** ``<model>/<run>`` (``lgbm/default-3fa9c2``, ``siamese_gru/bag-seeds=42.43.44-…``);
the blend, the comparison and the submission records use keys. Without ``--run`` (``RUN=``) a run's name is
derived from what it is: the options (and the competition's training options, and the seed) that differ from
the model's defaults on this source, ``default`` when none does, then ``-`` and a short hash of its whole
identity (``identity()``). So the same command resumes the same run, and another option value makes another
run beside it; nothing is deleted. A folder holding a run of other options is refused (one line naming the
differences) unless ``--replace`` discards it: that and ``make clean`` are the only deletions. A run whose
options are unchanged but whose features changed is the same run, refreshed (its old predictions are stale).

Folders of the earlier one-run-per-model layout (``models/<comp>/<source>/<run>/``) are moved under their
model by ``migrate_flat_runs`` the first time a stage reads the models folder: a model's default run gets
its identity name (so ``make train`` finds it up to date), other runs keep their names.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import logging
import re
import shutil
from pathlib import Path

from pipelines import config
from pipelines.common.io import read_json, sha256_json, write_json
from pipelines.common.log import StageError

log = logging.getLogger(__name__)

BLEND = "blend"             # the blend stage's folder beside the models' folders
IDENTITY = "identity.json"  # in each run folder: what the run is (model, options, seed, training options)
HASH_CHARS = 6
READABLE_CHARS = 48
DEFAULT = "default"
# files that mark a folder directly under models/<comp>/<source>/ as a run of the earlier flat layout
MIGRATING = ".migrating-"  # a flat run set aside while the migration moves it under its model
FLAT_RUN_MARKS = ("metrics.json", "params.json", "oof.parquet", "folds", "train.lock.json", "bag.lock.json",
                  "cv_state.json")


# -- names -------------------------------------------------------------------------------------------------------

def run_key(model: str, run: str) -> str:
    return f"{model}/{run}"


def split_key(key: str) -> tuple[str, str]:
    """(model, run) of a key; the blend's key is ("blend", "")."""
    model, _, run = key.partition("/")
    return model, run


def run_dir(comp: str, source: str, key: str) -> Path:
    return config.models_dir(comp, source) / key


def check_run_name(run: str) -> str:
    """``run`` as a run folder's name; StageError when it is not a plain folder name."""
    if (not run or run in (".", "..") or "/" in run or "\\" in run or run.startswith(".") or "," in run
            or any(c in run for c in "*?[]")):
        raise StageError(f"--run {run!r}: use a plain folder name (no '/', ',' or shell pattern characters, not "
                         "starting with '.')")
    return run


def _value_text(value) -> str:
    if isinstance(value, float):
        value = f"{value:.4g}"
    elif isinstance(value, (list, tuple)):
        value = ".".join(map(str, value))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(value))


def readable(differs: dict) -> str:
    """``field=value+field=value`` of the differing options (``default`` when none), at most READABLE_CHARS."""
    if not differs:
        return DEFAULT
    text = "+".join(f"{k}={_value_text(v)}" for k, v in differs.items())
    return text if len(text) <= READABLE_CHARS else text[:READABLE_CHARS].rstrip("+=_.")


def short_hash(obj) -> str:
    return sha256_json(obj)[:HASH_CHARS]


def _asdict(options) -> dict | None:
    if options is None:
        return None
    return dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options)


def identity(model: str, options, seed: int, train_options=None) -> dict:
    """What a run is: its model, every option's value, its seed and the competition's training options; in JSON's
    types (a tuple option is a list), so that it equals the identity.json it is compared with."""
    import json

    return json.loads(json.dumps({"model": model, "options": _asdict(options), "seed": seed,
                                  "train_options": _asdict(train_options)}, default=str))


def differences(ident: dict, defaults: dict) -> dict:
    """{name: value} of the seed, then the training options and options (by name, so a name read back from JSON
    is the same) of ``ident`` unlike ``defaults``: a long name is cut at its end, and the seed tells the runs of
    one bag apart."""
    out = {}
    if ident.get("seed") != defaults.get("seed"):
        out["seed"] = ident.get("seed")
    for part in ("train_options", "options"):
        mine, base = ident.get(part) or {}, defaults.get(part) or {}
        out.update({k: mine[k] for k in sorted(mine) if k not in base or base[k] != mine[k]})
    return out


def default_run_name(ident: dict, defaults: dict) -> str:
    """``<what differs from the defaults>-<hash of the identity>``, e.g. ``num_leaves=63-1a2b3c``."""
    return f"{readable(differences(ident, defaults))}-{short_hash(ident)}"


def bag_run_name(base_differs: dict, seeds: list[int], member_keys: list[str]) -> str:
    """A bag's default name: ``bag-seeds=42.43.44+<options that differ>-<hash of its members>``."""
    parts = {"seeds": ".".join(map(str, seeds))}
    parts.update({k: v for k, v in base_differs.items() if k != "seed"})
    return f"bag-{readable(parts)}-{short_hash(sorted(member_keys))}"


# -- the folders -------------------------------------------------------------------------------------------------

def is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in (IDENTITY, *FLAT_RUN_MARKS))


def run_folders(models_dir: Path) -> dict[str, Path]:
    """{key: folder} of every run folder (finished or not) under a models folder, blend included (key
    ``blend``), in key order; dot-folders are working files, not runs."""
    models_dir = Path(models_dir)
    out = {}
    if not models_dir.is_dir():
        return out
    for model_dir in sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if model_dir.name == BLEND or is_run_folder(model_dir):  # the blend, or a flat run not migrated
            out[model_dir.name] = model_dir
            continue
        for folder in sorted(p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            out[run_key(model_dir.name, folder.name)] = folder
    return out


def runs_of(comp: str, source: str, model: str) -> dict[str, Path]:
    """{key: folder} of the runs of one model."""
    return {k: p for k, p in run_folders(config.models_dir(comp, source)).items() if split_key(k)[0] == model}


def match(key: str, pattern: str) -> bool:
    """A key matches a shell pattern on the key (``lgbm/*``, ``*/bag-*``) or, without a ``/``, on its model's
    name (``lgbm``, ``siamese_*``: every run of those models) or on its run's name (``tuned-*``)."""
    if "/" in pattern:
        return fnmatch.fnmatchcase(key, pattern)
    model, run = split_key(key)
    return fnmatch.fnmatchcase(model, pattern) or bool(run) and fnmatch.fnmatchcase(run, pattern)


# -- identity of a folder ---------------------------------------------------------------------------------------

def recorded_identity(folder: Path) -> dict | None:
    path = Path(folder) / IDENTITY
    if not path.exists():
        return None
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _changes(old: dict, new: dict) -> str:
    shown = []
    for part in ("options", "train_options"):
        a, b = old.get(part) or {}, new.get(part) or {}
        shown += [f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if old.get("seed") != new.get("seed"):
        shown.append(f"seed {old.get('seed')} -> {new.get('seed')}")
    if old.get("model") != new.get("model"):
        shown.insert(0, f"model {old.get('model')} -> {new.get('model')}")
    return ", ".join(shown[:6]) + (f" (and {len(shown) - 6} more)" if len(shown) > 6 else "")


def claim(folder: Path, ident: dict, *, replace: bool = False, name_hint: str = "RUN=<another name>") -> None:
    """Make ``folder`` the run ``ident``: a new or matching folder is used (resumed), one holding a run of other
    options or seed is refused unless ``replace`` (then its files are deleted). Call it holding the folder's lock."""
    folder = Path(folder)
    old = recorded_identity(folder)
    has_files = folder.is_dir() and any(folder.iterdir())
    if old is not None and old != ident or old is None and has_files:
        if not replace:
            what = (f"a run with other options ({_changes(old, ident)})" if old is not None
                    else "files of a run whose options are not recorded")
            raise StageError(f"{folder} holds {what}: give the new run another name ({name_hint}), or add "
                             "--replace to delete that run and train this one there")
        log.warning("--replace: deleting the run in %s (%s)", folder,
                    _changes(old, ident) if old is not None else "options not recorded")
        shutil.rmtree(folder)
    if old != ident or not (folder / IDENTITY).exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / IDENTITY, ident)


# -- the earlier one-run-per-model layout -----------------------------------------------------------------------

def migrate_flat_runs(comp: str, source: str) -> dict[str, str]:
    """Move runs of the flat layout (``models/<comp>/<source>/<run>/``) under their model's folder; {old: new key}.

    The model is the one its params.json records (a bag: the model it bags), else the longest model name the
    folder's name starts with; a folder of no known model stays where it is (with a warning). A model's own run
    (folder named like the model) and its seeds' runs (``<model>-seed<S>``) whose options and seed their train
    locks recorded get their identity names, and then their bag (``<model>-bag<N>``) too, so ``make train``
    finds them; other runs keep their names. Bags' member lists and the stage locks' and run records' input
    paths follow the moves. A folder another process holds is left for a later call.
    """
    from pipelines import competitions
    from pipelines.common.locks import output_lock

    models_dir = config.models_dir(comp, source)
    if not models_dir.is_dir():
        return {}
    # .migrating-<name>: a folder an interrupted migration had set aside (the second step below)
    flat = [p for p in sorted(models_dir.iterdir())
            if p.is_dir() and p.name != BLEND and is_run_folder(p)
            and (not p.name.startswith(".") or p.name.startswith(MIGRATING))]
    if not flat:
        return {}
    known = competitions.get(comp)
    plans = []
    with contextlib.ExitStack() as held:
        for folder in flat:
            old_name = folder.name.removeprefix(MIGRATING)
            model = _flat_model(folder, old_name, known.models)
            if model is None:
                log.warning("%s: a run folder of the earlier layout whose model is unknown (none of %s); left where "
                            "it is: move it to models/%s/%s/<model>/%s by hand", folder,
                            ", ".join(known.models.names()), comp, config.source_label(source), old_name)
                continue
            try:
                held.enter_context(output_lock(models_dir / old_name, "moves a run to the per-model layout"))
            except StageError as exc:
                log.warning("%s: not moved now (%s)", folder, exc)
                continue
            name, ident = _migrated_name(folder, old_name, model, known, source)
            plans.append((folder, old_name, model, name, ident))
        busy = {p.name for p in flat} - {f.name for f, *_ in plans}
        plans = [p for p in plans if p[2] not in busy]  # a model's folder name held by a run not moved now
        # first every flat run aside (a run named like its model stands where the model's folder goes) ...
        aside = []
        for folder, old_name, model, name, ident in plans:
            tmp = models_dir / f"{MIGRATING}{old_name}"
            if folder != tmp:
                folder.rename(tmp)
            aside.append((tmp, old_name, model, name, ident))
        moved: dict[str, str] = {}
        aside = _bag_names(aside, models_dir, lambda model: default_identity(known, model, source))
        # ... then each into its model's folder
        for tmp, old_name, model, name, ident in aside:
            target = models_dir / model / name
            if target.exists():
                log.warning("%s: not moved, %s exists already; move or delete one of them", tmp, target)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(target)
            if ident is not None and recorded_identity(target) is None:
                write_json(target / IDENTITY, ident)
            moved[old_name] = run_key(model, name)
    if moved:
        _rewrite_references(models_dir, moved)
        log.info("%s/%s: %d run(s) moved to the per-model layout (models/<comp>/<source>/<model>/<run>/): %s",
                 comp, config.source_label(source), len(moved), ", ".join(f"{a} -> {b}" for a, b in moved.items()))
    return moved


def _params_json(folder: Path) -> dict:
    try:
        data = read_json(folder / "params.json")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _flat_model(folder: Path, old_name: str, registry) -> str | None:
    params = _params_json(folder)
    inner = params.get("params") if isinstance(params.get("params"), dict) else {}
    for name in (inner.get("bag_of"), params.get("model")):
        if name in registry:
            return name
    prefixes = [m for m in registry.names() if old_name == m or old_name.startswith(m)]
    return max(prefixes, key=len) if prefixes else None


def _migrated_name(folder: Path, old_name: str, model: str, comp, source: str) -> tuple[str, dict | None]:
    """(the run's name under its model, its identity when the train lock recorded it)."""
    ident = lock_identity(folder, model)
    if ident is None:
        return old_name, None
    if comp.train_options is not None and ident["train_options"] is None:
        return old_name, None  # its training options (e.g. an image size) are unknown: keep its name
    if old_name != model and not re.fullmatch(rf"{re.escape(model)}-seed-?\d+", old_name):
        return old_name, ident  # a named run keeps its name; a model's own run and its seeds' runs get identities
    try:
        defaults = default_identity(comp, model, source)
    except Exception as exc:  # a declaration that cannot be resolved now: the run keeps its name
        log.debug("%s: no identity name (%s)", folder, exc)
        return old_name, ident
    return default_run_name(ident, defaults), ident


def lock_identity(folder: Path, model: str) -> dict | None:
    """A run's identity as its train lock recorded it (runs older than identity.json), or None without options."""
    try:
        used = read_json(Path(folder) / "train.lock.json").get("params_used") or {}
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(used.get("options"), dict):
        return None
    return {"model": model, "options": used["options"], "seed": used.get("seed"),
            "train_options": used.get("train_options")}


def default_identity(comp, model: str, source: str) -> dict:
    """The identity of ``model``'s run with every option at its default on ``source`` (its profile there), the
    default seed and the competition's default training options: what a run's name is the difference from."""
    from pipelines.common.models import resolve_options

    resolved = resolve_options(comp.models[model], {}, comp.profile(config.source_label(source), model))
    return identity(model, resolved, config.SEED, comp.train_options() if comp.train_options is not None else None)


def _bag_names(aside: list, models_dir: Path, defaults_of) -> list:
    """A model's own bag (``<model>-bag<N>``) whose members all got identity names gets its identity name too."""
    by_old = {(model, old): (name, ident) for _, old, model, name, ident in aside}
    out = []
    for tmp, old_name, model, name, ident in aside:
        if name == old_name and re.fullmatch(rf"{re.escape(model)}-bag\d+", old_name):
            inner = _params_json(tmp).get("params") or {}
            members = inner.get("members") if isinstance(inner, dict) else None
            entries = [by_old.get((model, m)) for m in members or []]
            if members and all(e is not None and e[0] != m and e[1] for e, m in zip(entries, members)):
                try:
                    differs = differences(entries[0][1], defaults_of(model))
                    keys = [run_key(model, e[0]) for e in entries]
                    name = bag_run_name(differs, [e[1]["seed"] for e in entries], keys)
                except Exception as exc:  # the bag keeps its name
                    log.debug("%s: no identity name (%s)", tmp, exc)
        out.append((tmp, old_name, model, name, ident))
    return out


def _rewrite_references(models_dir: Path, moved: dict[str, str]) -> None:
    """After a migration: bags' member lists and every stage lock's input paths name the runs' new folders."""
    root = models_dir.resolve()
    prefixes = {str(root / old): str(root / new) for old, new in moved.items()}
    try:  # run.json's inputs are relative to the project root
        shown = root.relative_to(config.ROOT.resolve())
        prefixes.update({str(shown / old): str(shown / new) for old, new in moved.items()})
    except ValueError:
        pass

    def new_path(path: str) -> str:
        for old, new in prefixes.items():
            if path == old or path.startswith(old + "/"):
                return new + path[len(old):]
        return path

    for key, folder in run_folders(models_dir).items():
        params = _params_json(folder)
        inner = params.get("params") if isinstance(params.get("params"), dict) else None
        if inner and isinstance(inner.get("members"), list):
            members = [moved.get(m, m) for m in inner["members"]]
            if members != inner["members"]:
                inner["members"] = members
                write_json(folder / "params.json", params)
        for record, field in [*((lock, "deps") for lock in folder.glob("*.lock.json")), (folder / "run.json", "inputs")]:
            try:
                data = read_json(record)
            except (OSError, ValueError):
                continue
            paths = data.get(field) if isinstance(data, dict) else None
            if isinstance(paths, dict) and any(new_path(d) != d for d in paths):
                data[field] = {new_path(d): fp for d, fp in paths.items()}
                write_json(record, data)
