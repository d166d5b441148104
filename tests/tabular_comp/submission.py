"""Submission of the tabular competition: id, target (the probability), clipped."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.common.task import EPS


def sample_submission_path(raw_dir: Path) -> Path:
    return Path(raw_dir) / "sample_submission.csv"


def to_submission(test_pred: pd.DataFrame, args) -> pd.DataFrame:
    return pd.DataFrame({"id": test_pred["id"].astype(np.int64),
                         "target": np.clip(test_pred["target"].to_numpy(np.float64), EPS, 1 - EPS)})
