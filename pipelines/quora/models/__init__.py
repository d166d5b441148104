"""Quora models for the CV engine, and the one reader of the features folder they share.

Every model is a ``pipelines.common.cv.CVModel``: it receives train-row positions from the engine
and reads its inputs through ``QuoraFeatures``, so no model knows where or how features are stored.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from pipelines.common.log import StageError
from pipelines.common.stage import check_current

REQUIRED = ("ids_train.npy", "ids_test.npy", "labels.npy", "folds.npy", "features.lock.json")


class QuoraFeatures:
    """Read-only access to ``config.features_dir('quora', source)``; arrays are loaded once, on first use."""

    def __init__(self, features_dir: Path, source_hint: str = "<source>"):
        self.dir = Path(features_dir)
        self.source_hint = source_hint
        if not self.dir.is_dir() or not (self.dir / "features.lock.json").exists():
            raise StageError(f"no features in {self.dir}: run `make features COMP=quora SOURCE={source_hint}` first")
        missing = [name for name in REQUIRED if not (self.dir / name).exists()]
        if missing:
            raise StageError(self._missing_message(missing))
        # Damaged files, or raw data changed since the features were built: one line, not a traceback later.
        check_current(self.lock_path, f"make features COMP=quora SOURCE={source_hint}")

    def _missing_message(self, missing: list[str]) -> str:
        return (f"features folder {self.dir} lacks {', '.join(missing)}: re-run "
                f"`make features COMP=quora SOURCE={self.source_hint}`")

    def path(self, name: str) -> Path:
        p = self.dir / name
        if not p.exists():
            raise StageError(self._missing_message([name]))
        return p

    @property
    def lock_path(self) -> Path:
        return self.dir / "features.lock.json"

    @functools.cached_property
    def labels(self) -> np.ndarray:
        return np.load(self.path("labels.npy")).astype(np.int8)

    @functools.cached_property
    def folds(self) -> np.ndarray:
        folds = np.load(self.path("folds.npy"))
        if len(folds) != len(self.labels):
            raise StageError(f"{self.dir}: folds.npy has {len(folds)} rows but labels.npy {len(self.labels)}; "
                             f"re-run `make features COMP=quora SOURCE={self.source_hint}`")
        return folds

    @functools.cached_property
    def ids_train(self) -> np.ndarray:
        return np.load(self.path("ids_train.npy"))

    @functools.cached_property
    def ids_test(self) -> np.ndarray:
        return np.load(self.path("ids_test.npy"))

    @property
    def train_positive_rate(self) -> float:
        return float(np.mean(self.labels))

    def pair_feature_names(self, part: str) -> list[str]:
        import pyarrow.parquet as pq

        return list(pq.read_schema(self.path(f"pair_features_{part}.parquet")).names)

    def pair_feature_table(self, part: str, columns: list[str] | None = None):
        """Handcrafted + graph_* pair features (float32) of 'train' or 'test' as a pyarrow Table
        (``table[name]`` is a column), without a pandas copy."""
        import pyarrow.parquet as pq

        return pq.read_table(self.path(f"pair_features_{part}.parquet"), columns=columns)

    def pair_feature_matrix(self, part: str, columns: list[str] | None = None) -> np.ndarray:
        """The pair features as one float32 (n, k) array (``columns``, in that order; default all).

        Filled column by column from the Arrow table: the data is held twice at most, where the
        DataFrame route (read, select, convert) held it four times.
        """
        table = self.pair_feature_table(part, columns)
        out = np.empty((table.num_rows, table.num_columns), dtype=np.float32)
        for j in range(table.num_columns):
            out[:, j] = table.column(j).to_numpy()
        return out

    def tfidf(self, kind: str, question: str, part: str):
        """TF-IDF CSR matrix: kind 'word'|'char', question 'q1'|'q2', part 'train'|'test'."""
        import scipy.sparse as sp

        return sp.load_npz(self.path(f"tfidf_{kind}_{question}_{part}.npz")).tocsr()

    def seq(self, question: str, part: str) -> np.ndarray:
        """Padded token ids (int32 (n, max_len), 0 = padding), memory-mapped: slice what you need."""
        return np.load(self.path(f"seq_{question}_{part}.npy"), mmap_mode="r")

    def question_ids(self, part: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(qid1, qid2) of every pair of 'train' or 'test': one id per distinct normalised question over
        train and test (the features stage's text step), or None when the features have no text file."""
        import pyarrow.parquet as pq

        path = self.dir / f"text_{part}.parquet"
        if not path.exists():
            return None
        table = pq.read_table(path, columns=["qid1", "qid2"])
        return table.column("qid1").to_numpy(), table.column("qid2").to_numpy()

    def embedding_matrix(self) -> np.ndarray:
        return np.load(self.path("embedding_matrix.npy")).astype(np.float32)
