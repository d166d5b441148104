"""Bag-of-words baselines: a linear model on the TF-IDF pair representation.

A pair is represented symmetrically in q1/q2 (swapping the questions changes nothing):
|q1 - q2| (what differs), q1 * q2 (what is shared) and, optionally, q1 + q2 (the topic), for word
and for char n-gram TF-IDF, stacked side by side.

- ``bow_svm``: LinearSVC with sigmoid (Platt) calibration, fitted by an inner CV on the fold's train
  part (CalibratedClassifierCV), since an SVM's margins are not probabilities.
- ``bow_lr``: logistic regression (liblinear), probabilities directly.
Both are deterministic: fixed random_state, deterministic solvers, unshuffled inner CV.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import pickle
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from pipelines.common.io import atomic_path
from pipelines.common.log import StageError
from pipelines.common.models import ModelSpec
from pipelines.common.options import option
from pipelines.quora.models import QuoraFeatures

log = logging.getLogger(__name__)
PREDICT_CHUNK = 200_000  # test rows per block, so the 2.3M Kaggle test pairs are never built at once


def pair_matrix(q1: sp.csr_matrix, q2: sp.csr_matrix, with_sum: bool) -> sp.csr_matrix:
    """Symmetric pair representation of two aligned TF-IDF matrices."""
    blocks = [abs(q1 - q2), q1.multiply(q2)]
    if with_sum:
        blocks.append(q1 + q2)
    return sp.hstack(blocks, format="csr", dtype=np.float32)


# Inverse regularisation strength per kind (an SVM's hinge loss wants a smaller C than the logistic loss).
DEFAULT_C = {"lr": 1.0, "svm": 0.1}


@dataclasses.dataclass
class BowOptions:
    """Options of the bag-of-words baselines (bow_svm, bow_lr)."""

    C: float | None = option(None, "inverse regularisation strength", flag="--bow-C",
                             space=("float", 0.01, 10.0, "log"))
    word_only: bool = option(False, "word TF-IDF only (no char n-grams)", flag="--bow-word-only")
    no_sum: bool = option(False, "leave out the q1+q2 (topic) block", flag="--bow-no-sum")


class BowModel:
    def __init__(self, data: QuoraFeatures, kind: str = "lr", C: float | None = None, char: bool = True,
                 with_sum: bool = True, seed: int = 42):
        if kind not in ("lr", "svm"):
            raise ValueError(f"unknown BoW model kind {kind!r}")
        self.data = data
        self.kind = kind
        self.name = f"bow_{kind}"
        C = C if C is not None else DEFAULT_C[kind]
        self.params = {"kind": kind, "C": float(C), "char": bool(char), "with_sum": bool(with_sum),
                       "calibration": "sigmoid, 3-fold inner CV" if kind == "svm" else None, "seed": int(seed)}
        self._train_x = None
        self._test_raw = None  # {kind: (q1, q2)} test TF-IDF, kept across folds; pairs built per chunk

    def _kinds(self) -> list[str]:
        return ["word", "char"] if self.params["char"] else ["word"]

    def _raw(self, part: str) -> dict:
        raw = {}
        for kind in self._kinds():
            q1, q2 = self.data.tfidf(kind, "q1", part), self.data.tfidf(kind, "q2", part)
            if q1.shape != q2.shape:
                raise StageError(f"{self.data.dir}: tfidf_{kind}_q1_{part} and tfidf_{kind}_q2_{part} differ in "
                                 f"shape ({q1.shape} vs {q2.shape}); re-run the features stage")
            raw[kind] = (q1, q2)
        return raw

    def _pairs(self, raw: dict, rows: slice | None = None) -> sp.csr_matrix:
        blocks = []
        for q1, q2 in raw.values():
            if rows is not None:
                q1, q2 = q1[rows], q2[rows]
            blocks.append(pair_matrix(q1, q2, self.params["with_sum"]))
        return sp.hstack(blocks, format="csr", dtype=np.float32)

    @property
    def train_x(self) -> sp.csr_matrix:
        if self._train_x is None:
            self._train_x = self._pairs(self._raw("train"))
            log.info("%s: pair matrix %d x %d, %d non-zeros", self.name, *self._train_x.shape, self._train_x.nnz)
        return self._train_x

    def _estimator(self):
        from sklearn.linear_model import LogisticRegression

        seed = self.params["seed"]
        if self.kind == "lr":
            return LogisticRegression(C=self.params["C"], solver="liblinear", max_iter=1000, random_state=seed)
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import LinearSVC

        svm = LinearSVC(C=self.params["C"], dual=True, max_iter=5000, random_state=seed)
        return CalibratedClassifierCV(svm, method="sigmoid", cv=3)

    def fit(self, fold: int, train_idx: np.ndarray, valid_idx: np.ndarray, fold_dir: Path):
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        est = self._estimator()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # liblinear's tolerance note on tiny data
            est.fit(self.train_x[train_idx], self.data.labels[train_idx])
        return est

    def predict_valid(self, model, valid_idx: np.ndarray) -> np.ndarray:
        return model.predict_proba(self.train_x[valid_idx])[:, 1]

    def predict_test(self, model) -> np.ndarray:
        return self.predict_test_folds([model])[0]

    def predict_test_folds(self, models: list) -> list[np.ndarray]:
        """Every fold model's test predictions, each chunk's pair matrix built once for all of them (the
        engine's one pass after the folds)."""
        if self._test_raw is None:
            self._test_raw = self._raw("test")
        n_test = len(self.data.ids_test)
        out = [np.empty(n_test, dtype=np.float64) for _ in models]
        for start in range(0, n_test, PREDICT_CHUNK):
            rows = slice(start, min(start + PREDICT_CHUNK, n_test))
            pairs = self._pairs(self._test_raw, rows)
            for pred, model in zip(out, models):
                pred[rows] = model.predict_proba(pairs)[:, 1]
        return out

    def save(self, model, fold_dir: Path) -> None:
        with atomic_path(Path(fold_dir) / "model.pkl") as tmp:
            tmp.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))

    def load(self, fold_dir: Path):
        """The fold's saved estimator (written by ``save``: a file of this project's own run folder)."""
        return pickle.loads((Path(fold_dir) / "model.pkl").read_bytes())


def build(data, options: BowOptions, ctx, kind: str) -> BowModel:
    return BowModel(data.features, kind=kind, C=options.C, char=not options.word_only, with_sum=not options.no_sum,
                    seed=ctx.seed)


SPECS = [ModelSpec(name=f"bow_{kind}", options=BowOptions, build=functools.partial(build, kind=kind),
                   defaults={"C": DEFAULT_C[kind]}, group="bag-of-words models (bow_svm, bow_lr)", help=text)
         for kind, text in (("svm", "linear SVM (Platt-calibrated) on the TF-IDF pair blocks"),
                            ("lr", "logistic regression on the TF-IDF pair blocks"))]
