"""Cervix specifics of the submission: image_name plus one probability per type, rows summing to 1.

The generic checks and the writing are in pipelines.common.submission, the columns are the Task's
(``pipelines.cervix.competition.TASK``); this module says where the sample submission is, and how a
test.parquet frame becomes the file:
probabilities floored (``--cervix-min-prob``, default only 1e-15), each row renormalised to sum 1,
sorted by image name.

Which sample submission a file must match: the blend's follows the stage the test tensors were built
for (``make features ARGS='--stage 1|2'``; recorded in the features lock), the upload check
(``make submit``) the stage Kaggle scores: stage 2 (sample_submission_stg2.csv, 4,018 rows) whenever
raw/ holds that file.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.cervix.competition import TASK
from pipelines.cervix.data import SAMPLE_SUBMISSIONS
from pipelines.common.io import read_json
from pipelines.common.log import StageError
from pipelines.common.task import EPS

log = logging.getLogger(__name__)


def scored_stage(raw_dir: Path) -> int:
    """The stage Kaggle scores, as far as raw/ can tell: 2 when sample_submission_stg2.csv is there."""
    return 2 if (Path(raw_dir) / SAMPLE_SUBMISSIONS[2]).is_file() else 1


def features_stage(raw_dir: Path) -> int | None:
    """The stage the test tensors beside raw/ were built for (None: no features yet, or built before stages)."""
    lock = Path(raw_dir).parent / "features" / "features.lock.json"
    try:
        stage = read_json(lock).get("params_used", {}).get("stage") if lock.is_file() else None
    except (OSError, ValueError):
        return None
    return int(stage) if stage in (1, 2) else None


def sample_submission_path(raw_dir: Path) -> Path:
    """The sample submission a new file must match: that of the features' stage, else the scored stage."""
    return Path(raw_dir) / SAMPLE_SUBMISSIONS[features_stage(raw_dir) or scored_stage(raw_dir)]


def scored_submission_path(raw_dir: Path) -> Path:
    """The sample submission an upload must match: the stage Kaggle scores (stage 2 whenever raw/ has it)."""
    stage = scored_stage(raw_dir)
    if stage == 1:
        log.warning("Kaggle scores this competition in the stage-2 format (sample_submission_stg2.csv, 4,018 "
                    "rows) and raw/ holds only stage 1: the file is checked against sample_submission_stg1.csv; "
                    "get test_stg2.7z and sample_submission_stg2.csv (`make data COMP=cervix`) for a scored one")
    return Path(raw_dir) / SAMPLE_SUBMISSIONS[stage]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("cervix submission")
    g.add_argument("--cervix-min-prob", type=float, default=0.0,
                   help="floor every class probability at this value before renormalising (caps the log loss "
                        "of a confident mistake at -log(floor); default 0: only clipping at 1e-15)")


def to_submission(test_pred: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    """test.parquet frame (id, Type_1, Type_2, Type_3) -> image_name, Type_1, Type_2, Type_3."""
    pred_columns = list(TASK.pred_columns)
    missing = [c for c in ["id", *pred_columns] if c not in test_pred.columns]
    if missing:
        raise StageError(f"cervix test predictions lack column(s) {', '.join(missing)} (have "
                         f"{', '.join(map(str, test_pred.columns))}): re-run `make train COMP=cervix`")
    p = test_pred[pred_columns].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(p).all(axis=1)
    if bad.any():
        raise StageError(f"{int(bad.sum())} cervix test prediction row(s) are NaN or infinite (e.g. "
                         f"{test_pred['id'].iloc[int(np.flatnonzero(bad)[0])]}): re-run the model that made them")
    floor = float(getattr(args, "cervix_min_prob", 0.0) or 0.0)
    if not 0.0 <= floor < 1.0 / len(pred_columns):
        raise StageError(f"--cervix-min-prob {floor}: use a value in [0, {1 / len(pred_columns):.3f})")
    p = np.clip(p, max(floor, EPS), None)
    p = p / p.sum(axis=1, keepdims=True)
    p = np.clip(p, EPS, 1 - EPS)
    p = p / p.sum(axis=1, keepdims=True)
    out = pd.DataFrame({TASK.id_column: test_pred["id"].astype(str).to_numpy()})
    for j, name in enumerate(pred_columns):
        out[name] = p[:, j]
    return out.sort_values(TASK.id_column, kind="stable").reset_index(drop=True)
