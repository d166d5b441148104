"""The tabular competition's declaration: a binary task whose prediction column is called ``target``."""
from __future__ import annotations

import numpy as np

from pipelines import config
from pipelines.common.competition import Competition, ModuleRules, ModuleSubmission, TrainData
from pipelines.common.models import ModelRegistry
from pipelines.common.task import Task
from tabular_comp import logistic

TASK = Task(kind="binary", id_column="id", pred_columns=("target",))


def train_data(source, spec, options, ctx) -> TrainData:
    out = config.features_dir("tabular", source)
    load = lambda name: np.load(out / name)  # noqa: E731
    return TrainData(y=load("y.npy"), folds=load("folds.npy"), train_ids=load("ids_train.npy"),
                     test_ids=load("ids_test.npy"), inputs=[out / "features.lock.json"],
                     features=(load("x_train.npy"), load("x_test.npy")))


COMPETITION = Competition(
    name="tabular", slug="tabular-playground", task=TASK, raw=ModuleRules("tabular_comp.data"),
    features="tabular_comp.features", train_data=train_data, models=ModelRegistry([logistic.SPEC]),
    submission=ModuleSubmission("tabular_comp.submission"))
