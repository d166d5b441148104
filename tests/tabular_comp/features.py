"""Features stage of the tabular competition: the CSV columns as float arrays, and the folds."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines import config
from pipelines.common.cv import make_folds
from pipelines.common.io import save_npy
from pipelines.common.stage import Stage

OUTS = ["x_train.npy", "y.npy", "folds.npy", "x_test.npy", "ids_train.npy", "ids_test.npy"]


def add_arguments(parser) -> None:
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")


def main(args) -> int:
    raw, out = config.raw_dir("tabular", args.source), config.features_dir("tabular", args.source)
    stage = Stage("features", out, deps=[raw], params={"seed": args.seed}, outs=OUTS)
    if not args.force and stage.up_to_date():
        return 0
    out.mkdir(parents=True, exist_ok=True)
    train, test = pd.read_csv(raw / "train.csv"), pd.read_csv(raw / "test.csv")
    columns = [c for c in train.columns if c not in ("id", "target")]
    save_npy(out / "x_train.npy", train[columns].to_numpy(np.float64))
    save_npy(out / "y.npy", train["target"].to_numpy(np.int64))
    save_npy(out / "folds.npy", make_folds(train["target"].to_numpy(), 3, args.seed))
    save_npy(out / "x_test.npy", test[columns].to_numpy(np.float64))
    save_npy(out / "ids_train.npy", train["id"].to_numpy(np.int64))
    save_npy(out / "ids_test.npy", test["id"].to_numpy(np.int64))
    stage.done()
    return 0
