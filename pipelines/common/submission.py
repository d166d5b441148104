"""Leaderboard submission files: the checks Kaggle would make, before Kaggle makes them.

The competition specifics come from ``pipelines.<comp>.submission`` (``ID_COLUMN``,
``PRED_COLUMNS``, ``sample_submission_path(raw_dir)``, ``to_submission(test_pred, args)``,
``add_arguments(parser)``). The rules checked here, for every competition:

- exactly the columns ``[ID_COLUMN, *PRED_COLUMNS]``, in that order;
- every reference id exactly once: none missing, none duplicated, none extra (the reference ids
  come from the sample submission, else from test.csv or the test/ image names, with a warning);
- predictions numeric, no NaN or infinity, clipped to [1e-15, 1 - 1e-15];
- with several prediction columns (multi-class), every row sums to 1 within 1e-6.

Files go to ``submissions/<comp>/<name>.csv``, written atomically and never over an earlier file:
a taken name gets a numeric suffix (``name-2.csv``, ``name-3.csv``, ...).
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from pipelines import config
from pipelines.common.log import StageError

log = logging.getLogger(__name__)
EPS = 1e-15
ROW_SUM_TOLERANCE = 1e-6
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def competition_module(comp: str) -> ModuleType:
    """``pipelines.<comp>.submission``: the competition's columns, sample file and converter."""
    config.check_comp(comp)
    name = f"pipelines.{comp}.submission"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            raise StageError(f"no submission format for {comp}: {name} is missing") from exc
        raise


def _examples(values, n: int = 5) -> str:
    values = sorted(map(str, values))
    more = f" (and {len(values) - n} more)" if len(values) > n else ""
    return ", ".join(values[:n]) + more


def reference_ids(comp: str, source: str, scored: bool = False) -> np.ndarray:
    """The ids a submission must cover, as strings: the sample submission's, else the test set's.

    ``scored``: of the sample submission the competition scores uploads against now
    (``scored_submission_path`` where the competition has stages), not that of the predictions made.
    """
    mod = competition_module(comp)
    raw = config.raw_dir(comp, source)
    sample = (getattr(mod, "scored_submission_path", mod.sample_submission_path) if scored
              else mod.sample_submission_path)(raw)
    if sample.exists():
        ids = pd.read_csv(sample, usecols=[mod.ID_COLUMN], dtype={mod.ID_COLUMN: str})[mod.ID_COLUMN]
        return ids.to_numpy(dtype=object)
    test_csv, test_dir = raw / "test.csv", raw / "test"
    if test_csv.exists():
        log.warning("%s is absent: checking the submission against the ids in %s", sample, test_csv)
        try:
            ids = pd.read_csv(test_csv, usecols=[mod.ID_COLUMN], dtype={mod.ID_COLUMN: str})[mod.ID_COLUMN]
        except ValueError as exc:
            raise StageError(f"{test_csv} has no {mod.ID_COLUMN} column ({exc}); re-run `make data COMP={comp}`") from exc
        return ids.to_numpy(dtype=object)
    if test_dir.is_dir():
        log.warning("%s is absent: checking the submission against the image names in %s", sample, test_dir)
        names = sorted(p.name for p in test_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return np.array(names, dtype=object)
    raise StageError(f"no reference ids for a {comp} submission: neither {sample} nor the test set is in {raw}; "
                     f"run `make data COMP={comp} SOURCE={source}` first")


def validate_submission(comp: str, df: pd.DataFrame, reference_ids) -> None:
    """Raise StageError naming the first rule ``df`` breaks; return None when it is a valid submission."""
    mod = competition_module(comp)
    expected = [mod.ID_COLUMN, *mod.PRED_COLUMNS]
    if list(df.columns) != expected:
        raise StageError(f"{comp} submission columns are {list(df.columns)}; expected exactly {expected}")
    if len(df) == 0:
        raise StageError(f"{comp} submission has no rows")
    id_col = df[mod.ID_COLUMN]
    if pd.api.types.is_float_dtype(id_col):
        raise StageError(f"{comp} submission ids in {mod.ID_COLUMN!r} are floating point; write them as integers")
    ids = id_col.astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise StageError(f"{comp} submission has {dup.nunique()} duplicated id(s): {_examples(dup.unique())}")
    ref = pd.Series(np.asarray(reference_ids, dtype=object)).astype(str)
    have, want = set(ids), set(ref)
    missing, extra = want - have, have - want
    if missing:
        raise StageError(f"{comp} submission lacks {len(missing)} of the {len(want)} test ids: {_examples(missing)}")
    if extra:
        raise StageError(f"{comp} submission has {len(extra)} id(s) not in the test set: {_examples(extra)}")

    preds = df[mod.PRED_COLUMNS]
    bad_type = [c for c in mod.PRED_COLUMNS if not pd.api.types.is_numeric_dtype(preds[c])]
    if bad_type:
        raise StageError(f"{comp} submission column(s) {bad_type} are not numeric")
    values = preds.to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise StageError(f"{comp} submission has NaN or infinite predictions in {len(rows)} row(s), "
                         f"e.g. id {ids.iloc[rows[0]]}")
    # The bounds allow for float rounding of values clipped exactly at 1e-15 / 1 - 1e-15.
    low, high = EPS * (1 - 1e-3), 1 - EPS * (1 - 1e-3)
    outside = (values < low) | (values > high)
    if outside.any():
        row = int(np.flatnonzero(outside.any(axis=1))[0])
        raise StageError(f"{comp} submission has predictions outside [1e-15, 1-1e-15] in {int(outside.any(axis=1).sum())} "
                         f"row(s), e.g. id {ids.iloc[row]}: clip them")
    if len(mod.PRED_COLUMNS) > 1:
        off = np.abs(values.sum(axis=1) - 1.0) > ROW_SUM_TOLERANCE
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise StageError(f"{comp} submission has {int(off.sum())} row(s) whose probabilities do not sum to 1 "
                             f"(within {ROW_SUM_TOLERANCE}), e.g. id {ids.iloc[row]} sums to "
                             f"{values[row].sum():.6f}")


def read_submission(comp: str, path: Path) -> pd.DataFrame:
    mod = competition_module(comp)
    path = Path(path)
    if not path.is_file():
        raise StageError(f"no submission file {path}")
    try:
        return pd.read_csv(path, dtype={mod.ID_COLUMN: str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise StageError(f"{path} is not a readable CSV: {exc}") from exc


def validate_submission_file(comp: str, path: Path, source: str, scored: bool = True) -> None:
    """Check a submission CSV (an upload) against the test ids of ``source`` (StageError naming the file);
    ``scored``: against the sample submission the competition scores now (see reference_ids)."""
    df = read_submission(comp, path)
    try:
        validate_submission(comp, df, reference_ids(comp, source, scored=scored))
    except StageError as exc:
        mod = competition_module(comp)
        if scored and hasattr(mod, "scored_submission_path"):
            exc = StageError(f"{exc} (checked against {mod.scored_submission_path(config.raw_dir(comp, source)).name}, "
                             f"the format {comp} is scored in)")
        raise StageError(f"{path}: {exc}") from exc
    log.info("%s: a valid %s submission (%d rows)", path, comp, len(df))


def _safe_name(name: str) -> str:
    name = name[:-4] if name.lower().endswith(".csv") else name
    if not name or name.startswith(".") or not re.fullmatch(r"[A-Za-z0-9._+=-]+", name):
        raise StageError(f"bad submission name {name!r}: use letters, digits and . _ - + = only")
    return name


def _claim(tmp: Path, target: Path) -> bool:
    """Give the finished temp file the name ``target`` only if that name is free (atomic); True if done."""
    try:
        os.link(tmp, target)  # fails if target exists: an earlier submission is never replaced
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: reserve the name exclusively, then rename onto it
        try:
            fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.close(fd)
        os.replace(tmp, target)
        return True


def write_submission(comp: str, df: pd.DataFrame, name: str, source: str) -> Path:
    """Validate ``df`` and write it as ``submissions/<comp>/<name>.csv`` (or ``<name>-<n>.csv`` if taken)."""
    validate_submission(comp, df, reference_ids(comp, source))
    name = _safe_name(name)
    out_dir = config.submissions_dir(comp)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp.csv", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        df.to_csv(tmp, index=False)
        for n in range(1, 10_000):
            target = out_dir / (f"{name}.csv" if n == 1 else f"{name}-{n}.csv")
            if _claim(tmp, target):
                break
        else:  # pragma: no cover - ten thousand files of one name
            raise StageError(f"too many submissions named {name} in {out_dir}; pick another --name")
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    if config.source_label(source) == "sample":
        log.info("wrote %s (%d rows); built from the synthetic sample, so it is for checking only, not for Kaggle",
                 target, len(df))
    else:
        log.info("wrote %s (%d rows); upload it with `make submit COMP=%s SOURCE=%s FILE=%s MESSAGE='...'`", target,
                 len(df), comp, source, target)
    return target
