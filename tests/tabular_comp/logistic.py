"""The tabular competition's own model, in one file: a standardised logistic regression."""
from __future__ import annotations

import dataclasses

import numpy as np

from pipelines.common.models import ModelSpec
from pipelines.common.options import option


@dataclasses.dataclass
class LogisticOptions:
    C: float = option(1.0, "inverse regularisation strength", flag="--logistic-C", space=("float", 0.01, 10.0, "log"))


class LogisticModel:
    name = "logistic"

    def __init__(self, x_train, y, x_test, options: LogisticOptions, seed: int):
        self.x_train, self.y, self.x_test = x_train, y, x_test
        self.params = {"C": options.C, "seed": seed}

    def fit(self, fold, train_idx, valid_idx, fold_dir):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        model = make_pipeline(StandardScaler(), LogisticRegression(C=self.params["C"]))
        return model.fit(self.x_train[train_idx], self.y[train_idx])

    def predict_valid(self, model, valid_idx) -> np.ndarray:
        return model.predict_proba(self.x_train[valid_idx])[:, 1]

    def predict_test(self, model) -> np.ndarray:
        return model.predict_proba(self.x_test)[:, 1]

    def save(self, model, fold_dir) -> None:
        pass


def build(data, options: LogisticOptions, ctx) -> LogisticModel:
    x_train, x_test = data.features
    return LogisticModel(x_train, data.y, x_test, options, ctx.seed)


SPEC = ModelSpec(name="logistic", options=LogisticOptions, build=build, help="standardised logistic regression")
