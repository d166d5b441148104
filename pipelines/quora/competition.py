"""Quora Question Pairs, declared for the shared stages (pipelines.common.competition)."""
from __future__ import annotations

from pipelines import config
from pipelines.common.competition import Competition, FunctionSample, ModuleRules, ModuleSubmission, TrainData
from pipelines.common.models import ModelRegistry
from pipelines.common.task import Task
from pipelines.quora import data
from pipelines.quora.models import bow, lgbm, siamese

TASK = Task(kind="binary", id_column="test_id", pred_columns=("is_duplicate",))


def train_data(source: str, spec, options, ctx) -> TrainData:
    """Every Quora model reads the one features folder (QuoraFeatures), whatever its options."""
    from pipelines.quora.models import QuoraFeatures

    features = QuoraFeatures(config.features_dir("quora", source), source_hint=source)
    return TrainData(y=features.labels, folds=features.folds, train_ids=features.ids_train,
                     test_ids=features.ids_test, inputs=[features.lock_path], features=features,
                     description=f"{len(features.labels)} train pairs, {len(features.ids_test)} test pairs, "
                                 f"{int(features.folds.max()) + 1} folds")


COMPETITION = Competition(
    name="quora",
    slug="quora-question-pairs",
    description="Quora Question Pairs: is a pair of questions a duplicate (binary log loss)",
    task=TASK,
    raw=ModuleRules("pipelines.quora.data"),
    features="pipelines.quora.features",
    train_data=train_data,
    models=ModelRegistry([*bow.SPECS, lgbm.SPEC, *siamese.SPECS]),
    submission=ModuleSubmission("pipelines.quora.submission"),
    sample=FunctionSample(version=data.GENERATOR_VERSION, options=data.SampleOptions,
                          generate_fn="pipelines.quora.data:generate_sample", kaggle_size=data.KAGGLE_SIZE),
    # The built-in sample only has to show that the networks learn: a few epochs keep `make all` quick.
    profiles={"sample": {"siamese_lstm": {"epochs": 6}, "siamese_gru": {"epochs": 6}}},
)
