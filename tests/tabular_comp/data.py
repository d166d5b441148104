"""Raw rules of the tabular competition: train.csv (id, f0..fk, target) and test.csv (id, f0..fk)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipelines.common.log import StageError

MARKER = "train.csv"
DATA_FILES = ("train.csv", "test.csv", "sample_submission.csv")


def is_data_name(rel: str) -> bool:
    return Path(rel).name in DATA_FILES


def keep(rel: str) -> bool:
    return rel in DATA_FILES


def looks_like(names: set[str]) -> bool:
    return "train.csv" in {Path(n).name for n in names} and "question1" not in names


def validate(raw_dir: Path) -> dict:
    train_csv, test_csv = Path(raw_dir) / "train.csv", Path(raw_dir) / "test.csv"
    for path in (train_csv, test_csv):
        if not path.is_file():
            raise StageError(f"{path} is missing: the tabular competition needs train.csv and test.csv")
    train = pd.read_csv(train_csv)
    if "target" not in train.columns or "id" not in train.columns:
        raise StageError(f"{train_csv} needs the columns id and target (has {', '.join(train.columns)})")
    return {"n_train": len(train), "n_test": len(pd.read_csv(test_csv)),
            "positive_rate": float(train["target"].mean()), "warnings": []}


def summary_lines(report: dict) -> list[str]:
    return [f"{report['n_train']} train rows ({report['positive_rate']:.1%} positive), {report['n_test']} test rows"]
