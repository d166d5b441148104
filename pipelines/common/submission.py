"""Leaderboard submission files: the checks Kaggle would make, before Kaggle makes them.

The columns and the rules come from the competition's ``Task`` (``pipelines.common.task``: id column,
prediction columns, clipping, row-sum tolerance, binary or multi-class), the reference ids' file from its
``SubmissionFormat`` (``Competition.submission``: ``sample_submission_path``, ``scored_submission_path``).
The rules checked here, for every competition:

- exactly the columns ``[task.id_column, *task.pred_columns]``, in that order;
- every reference id exactly once: none missing, none duplicated, none extra (the reference ids
  come from the sample submission, else from test.csv or the test/ image names, with a warning);
- predictions numeric, no NaN or infinity, clipped to [task.clip, 1 - task.clip] (1e-15);
- a multi-class task's rows sum to 1 within ``task.row_sum_tolerance`` (1e-6).

Files go to ``submissions/<comp>/<name>.csv``, written atomically and never over an earlier file:
a taken name gets a numeric suffix (``name-2.csv``, ``name-3.csv``, ...).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import competitions, config
from pipelines.common.log import StageError

log = logging.getLogger(__name__)
# Test images a submission's ids may be read from when there is no sample submission and no test.csv.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _scored_path(fmt, raw: Path) -> Path:
    return getattr(fmt, "scored_submission_path", fmt.sample_submission_path)(raw)


def _examples(values, n: int = 5) -> str:
    values = sorted(map(str, values))
    more = f" (and {len(values) - n} more)" if len(values) > n else ""
    return ", ".join(values[:n]) + more


def reference_ids(comp: str, source: str, scored: bool = False) -> np.ndarray:
    """The ids a submission must cover, as strings: the sample submission's, else the test set's.

    ``scored``: of the sample submission the competition scores uploads against now
    (``scored_submission_path`` where the competition has stages), not that of the predictions made.
    """
    known = competitions.get(comp)
    fmt, id_col = known.submission, known.task.id_column
    raw = config.raw_dir(comp, source)
    sample = _scored_path(fmt, raw) if scored else fmt.sample_submission_path(raw)
    if sample.exists():
        ids = pd.read_csv(sample, usecols=[id_col], dtype={id_col: str})[id_col]
        return ids.to_numpy(dtype=object)
    test_csv, test_dir = raw / "test.csv", raw / "test"
    if test_csv.exists():
        log.warning("%s is absent: checking the submission against the ids in %s", sample, test_csv)
        try:
            ids = pd.read_csv(test_csv, usecols=[id_col], dtype={id_col: str})[id_col]
        except ValueError as exc:
            raise StageError(f"{test_csv} has no {id_col} column ({exc}); re-run `make data COMP={comp}`") from exc
        return ids.to_numpy(dtype=object)
    if test_dir.is_dir():
        log.warning("%s is absent: checking the submission against the image names in %s", sample, test_dir)
        names = sorted(p.name for p in test_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        return np.array(names, dtype=object)
    raise StageError(f"no reference ids for a {comp} submission: neither {sample} nor the test set is in {raw}; "
                     f"run `make data COMP={comp} SOURCE={source}` first")


def validate_submission(comp: str, df: pd.DataFrame, reference_ids, task=None) -> None:
    """Raise StageError naming the first rule ``df`` breaks; return None when it is a valid submission.
    ``task``: the rules (default: the competition's ``Task``)."""
    task = task if task is not None else competitions.get(comp).task
    pred_cols = list(task.pred_columns)
    expected = [task.id_column, *pred_cols]
    if list(df.columns) != expected:
        raise StageError(f"{comp} submission columns are {list(df.columns)}; expected exactly {expected}")
    if len(df) == 0:
        raise StageError(f"{comp} submission has no rows")
    id_col = df[task.id_column]
    if pd.api.types.is_float_dtype(id_col):
        raise StageError(f"{comp} submission ids in {task.id_column!r} are floating point; write them as integers")
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

    preds = df[pred_cols]
    bad_type = [c for c in pred_cols if not pd.api.types.is_numeric_dtype(preds[c])]
    if bad_type:
        raise StageError(f"{comp} submission column(s) {bad_type} are not numeric")
    values = preds.to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise StageError(f"{comp} submission has NaN or infinite predictions in {len(rows)} row(s), "
                         f"e.g. id {ids.iloc[rows[0]]}")
    # The bounds allow for float rounding of values clipped exactly at the task's clip (1e-15).
    low, high = task.clip * (1 - 1e-3), 1 - task.clip * (1 - 1e-3)
    outside = (values < low) | (values > high)
    if outside.any():
        row = int(np.flatnonzero(outside.any(axis=1))[0])
        raise StageError(f"{comp} submission has predictions outside [{task.clip:g}, 1-{task.clip:g}] in "
                         f"{int(outside.any(axis=1).sum())} row(s), e.g. id {ids.iloc[row]}: clip them")
    if task.kind == "multiclass":
        off = np.abs(values.sum(axis=1) - 1.0) > task.row_sum_tolerance
        if off.any():
            row = int(np.flatnonzero(off)[0])
            raise StageError(f"{comp} submission has {int(off.sum())} row(s) whose probabilities do not sum to 1 "
                             f"(within {task.row_sum_tolerance}), e.g. id {ids.iloc[row]} sums to "
                             f"{values[row].sum():.6f}")


def read_submission(comp: str, path: Path) -> pd.DataFrame:
    id_col = competitions.get(comp).task.id_column
    path = Path(path)
    if not path.is_file():
        raise StageError(f"no submission file {path}")
    try:
        return pd.read_csv(path, dtype={id_col: str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise StageError(f"{path} is not a readable CSV: {exc}") from exc


def validate_submission_file(comp: str, path: Path, source: str, scored: bool = True) -> None:
    """Check a submission CSV (an upload) against the test ids of ``source`` (StageError naming the file);
    ``scored``: against the sample submission the competition scores now (see reference_ids)."""
    df = read_submission(comp, path)
    try:
        validate_submission(comp, df, reference_ids(comp, source, scored=scored))
    except StageError as exc:
        if scored:
            fmt, raw = competitions.get(comp).submission, config.raw_dir(comp, source)
            checked = _scored_path(fmt, raw)
            if checked.name != fmt.sample_submission_path(raw).name:  # a competition scored in another format
                exc = StageError(f"{exc} (checked against {checked.name}, the format {comp} is scored in)")
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
