"""What a competition scores: the ``Task``. The CV engine, the blend, the comparison and the submission
checker ask the Task, never the competition's name.

    Task(kind="binary", id_column="test_id", pred_columns=("is_duplicate",))
    Task(kind="multiclass", id_column="image_name", pred_columns=("Type_1", "Type_2", "Type_3"))

``pred_columns`` name the model's outputs everywhere: the prediction files of a run (``oof.parquet``,
``test.parquet``) and the submission's columns after the id. A binary task has one column, the probability
of the positive class; a multi-class task one per class, in label order (label k is ``pred_columns[k]``),
each row a distribution. Only these two kinds exist today; ``KINDS`` leaves room for multi-label and
regression, which need their own ``score`` and clipping rules before a competition can declare them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Kaggle's log loss clips predictions to [EPS, 1 - EPS]; the engine and the submission checker do the same.
EPS = 1e-15
KINDS = ("binary", "multiclass")
# Columns of a run's oof.parquet besides the predictions: the row id, its fold and its label.
ID, FOLD, LABEL = "id", "fold", "target"


@dataclass(frozen=True)
class Task:
    kind: str                       # "binary" | "multiclass"
    id_column: str                  # the submission's id column
    pred_columns: tuple[str, ...]   # prediction columns (binary: one; multi-class: one per class, label order)
    metric: str = "log_loss"        # what the leaderboard scores; every metric of ``score`` is recorded
    clip: float = EPS               # submissions clip predictions to [clip, 1 - clip]
    row_sum_tolerance: float = 1e-6  # multi-class rows of a submission sum to 1 within this

    def __post_init__(self):
        object.__setattr__(self, "pred_columns", tuple(self.pred_columns))
        if self.kind not in KINDS:
            raise ValueError(f"Task kind {self.kind!r}: use one of {', '.join(KINDS)}")
        if not self.pred_columns or len(set(self.pred_columns)) != len(self.pred_columns):
            raise ValueError(f"Task pred_columns {self.pred_columns!r}: give distinct column names")
        if self.kind == "binary" and len(self.pred_columns) != 1:
            raise ValueError("a binary Task has one prediction column (the positive class's probability)")
        if self.kind == "multiclass" and len(self.pred_columns) < 2:
            raise ValueError("a multi-class Task has one prediction column per class (two or more)")
        if self.metric != "log_loss":
            raise ValueError(f"Task metric {self.metric!r}: only log_loss is implemented")

    @property
    def n_classes(self) -> int:
        return 2 if self.kind == "binary" else len(self.pred_columns)

    @property
    def label_column(self) -> str:
        """The label column of oof.parquet: ``target``, unless a prediction column is called so."""
        return LABEL if LABEL not in self.pred_columns else f"{LABEL}_label"

    def clip_probs(self, pred: np.ndarray) -> np.ndarray:
        """Predictions clipped to [EPS, 1 - EPS]; multi-class rows renormalised to sum to 1."""
        pred = np.clip(np.asarray(pred, dtype=np.float64), EPS, 1 - EPS)
        if self.kind == "multiclass":
            pred = pred / pred.sum(axis=1, keepdims=True)
        return pred

    def score(self, y_true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        """Log loss, accuracy and (binary) ROC AUC."""
        from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

        y_true = np.asarray(y_true)
        pred = self.clip_probs(pred)
        if self.kind == "binary":
            out = {"log_loss": float(log_loss(y_true, pred, labels=[0, 1])),
                   "accuracy": float(accuracy_score(y_true, pred > 0.5))}
            out["auc"] = float(roc_auc_score(y_true, pred)) if len(np.unique(y_true)) == 2 else float("nan")
            return out
        return {"log_loss": float(log_loss(y_true, pred, labels=list(range(self.n_classes)))),
                "accuracy": float(accuracy_score(y_true, pred.argmax(axis=1)))}

    def as_class_probs(self, pred: np.ndarray) -> np.ndarray:
        """(n, K) class probabilities of a prediction in the task's shape ((n,) for binary)."""
        pred = np.asarray(pred, dtype=np.float64)
        return np.column_stack([1 - pred, pred]) if self.kind == "binary" else pred

    def from_class_probs(self, probs: np.ndarray) -> np.ndarray:
        """The task's shape of (n, K) class probabilities: the positive column for binary."""
        return probs[:, 1] if self.kind == "binary" else probs
