"""Cervix specifics of the submission: image_name plus one probability per type, rows summing to 1.

The generic checks and the writing are in pipelines.common.submission; this module says what the
columns are, where the sample submission is, and how a test.parquet frame becomes the file:
probabilities floored (``--cervix-min-prob``, default only 1e-15), each row renormalised to sum 1,
sorted by image name as Kaggle's sample_submission_stg1.csv is.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.common.log import StageError

ID_COLUMN = "image_name"
PRED_COLUMNS = ["Type_1", "Type_2", "Type_3"]
EPS = 1e-15


def sample_submission_path(raw_dir: Path) -> Path:
    return Path(raw_dir) / "sample_submission_stg1.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cervix submission")
    g.add_argument("--cervix-min-prob", type=float, default=0.0,
                   help="floor every class probability at this value before renormalising (caps the log loss "
                        "of a confident mistake at -log(floor); default 0: only clipping at 1e-15)")


def to_submission(test_pred: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    """test.parquet frame (id, Type_1, Type_2, Type_3) -> image_name, Type_1, Type_2, Type_3."""
    missing = [c for c in ["id", *PRED_COLUMNS] if c not in test_pred.columns]
    if missing:
        raise StageError(f"cervix test predictions lack column(s) {', '.join(missing)} (have "
                         f"{', '.join(map(str, test_pred.columns))}): re-run `make train COMP=cervix`")
    p = test_pred[PRED_COLUMNS].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        raise StageError(f"{int(bad.sum())} cervix test prediction row(s) are NaN or infinite (e.g. "
                         f"{test_pred['id'].iloc[int(np.flatnonzero(bad)[0])]}): re-run the model that made them")
    floor = float(getattr(args, "cervix_min_prob", 0.0) or 0.0)
    if not 0.0 <= floor < 1.0 / len(PRED_COLUMNS):
        raise StageError(f"--cervix-min-prob {floor}: use a value in [0, {1 / len(PRED_COLUMNS):.3f})")
    p = np.clip(p, max(floor, EPS), None)
    p = p / p.sum(axis=1, keepdims=True)
    p = np.clip(p, EPS, 1 - EPS)
    p = p / p.sum(axis=1, keepdims=True)
    out = pd.DataFrame({ID_COLUMN: test_pred["id"].astype(str).to_numpy()})
    for j, name in enumerate(PRED_COLUMNS):
        out[name] = p[:, j]
    return out.sort_values(ID_COLUMN, kind="stable").reset_index(drop=True)
