"""A third, tiny competition for tests/test_contract.py: a tabular binary task whose prediction column is
called ``target``. One package (this one) plus one registry line (the test's ``competitions.register``);
it declares only what it has: no sample, no archives, no submission options."""

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def write_raw(folder: Path) -> str:
    """The competition's files as a user downloads them (240 train rows, 60 test rows) into ``folder``; its path."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    x = rng.normal(size=(240, 4))
    y = (x @ np.array([1.5, -1.0, 0.5, 0.0]) + rng.normal(scale=0.8, size=240) > 0).astype(int)
    pd.DataFrame({"id": np.arange(240), **{f"f{j}": x[:, j] for j in range(4)}, "target": y}).to_csv(
        folder / "train.csv", index=False)
    xt = rng.normal(size=(60, 4))
    pd.DataFrame({"id": np.arange(1000, 1060), **{f"f{j}": xt[:, j] for j in range(4)}}).to_csv(
        folder / "test.csv", index=False)
    pd.DataFrame({"id": np.arange(1000, 1060), "target": 0.5}).to_csv(folder / "sample_submission.csv", index=False)
    return str(folder)
