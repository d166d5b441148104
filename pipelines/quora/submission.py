"""Quora specifics of the submission: the test-prior correction (the columns are the Task's, ``TASK``).

The Kaggle test set has far fewer duplicates (about 16.5%, known from probing the leaderboard)
than the train set (~37%). A model calibrated on train therefore over-predicts duplicates on
test; Bayes' rule with the two priors moves each probability to the test prior:

    p' = a*p / (a*p + b*(1-p)),  a = r_test / r_train,  b = (1 - r_test) / (1 - r_train)

Applied to the submission only: the OOF scores stay those of the train distribution.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import config
from pipelines.common.log import StageError
from pipelines.common.task import EPS
from pipelines.quora.competition import TASK

DEFAULT_TEST_POSITIVE_RATE = 0.165


def sample_submission_path(raw_dir: Path) -> Path:
    return Path(raw_dir) / "sample_submission.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("quora submission")
    g.add_argument("--test-positive-rate", type=float, default=DEFAULT_TEST_POSITIVE_RATE,
                   help="duplicate rate assumed for the test set; predictions are moved from the train "
                        "rate to it (default 0.165; 0 disables)")
    g.add_argument("--no-prior-correction", action="store_true", help="submit the probabilities unchanged")
    g.add_argument("--train-positive-rate", type=float, default=None,
                   help="train duplicate rate (default: from the features' labels.npy)")


def prior_correction(p: np.ndarray, r_train: float, r_test: float) -> np.ndarray:
    """Move probabilities calibrated at positive rate r_train to positive rate r_test (Bayes' rule)."""
    if not (0 < r_train < 1 and 0 < r_test < 1):
        raise ValueError(f"positive rates must lie strictly between 0 and 1 (train {r_train}, test {r_test})")
    p = np.asarray(p, dtype=np.float64)
    a = r_test / r_train
    b = (1 - r_test) / (1 - r_train)
    return a * p / (a * p + b * (1 - p))


def train_positive_rate(source: str) -> float:
    labels_path = config.features_dir("quora", source) / "labels.npy"
    if not labels_path.exists():
        raise StageError(f"no {labels_path} to take the train duplicate rate from: run `make features COMP=quora "
                         f"SOURCE={source}`, or pass --train-positive-rate, or --no-prior-correction")
    return float(np.mean(np.load(labels_path)))


def to_submission(test_pred: pd.DataFrame, args: argparse.Namespace) -> pd.DataFrame:
    """test.parquet frame (id, is_duplicate) -> (test_id, is_duplicate), prior-corrected and clipped."""
    (column,) = TASK.pred_columns
    p = test_pred[column].to_numpy(dtype=np.float64)
    r_test = getattr(args, "test_positive_rate", DEFAULT_TEST_POSITIVE_RATE)
    if not getattr(args, "no_prior_correction", False) and r_test:
        r_train = getattr(args, "train_positive_rate", None)
        if r_train is None:
            r_train = train_positive_rate(args.source)
        try:
            p = prior_correction(p, r_train, r_test)
        except ValueError as exc:
            raise StageError(f"prior correction: {exc}; fix --test-positive-rate/--train-positive-rate") from exc
    ids = pd.to_numeric(test_pred["id"], errors="raise").astype(np.int64)
    out = pd.DataFrame({TASK.id_column: ids.to_numpy(), column: np.clip(p, EPS, 1 - EPS)})
    return out.sort_values(TASK.id_column, kind="stable").reset_index(drop=True)
