"""The contract between the shared stages and a competition: one ``Competition`` per package.

A competition package (``pipelines/<name>/``) declares one ``Competition`` object, ``COMPETITION`` in its
``competition.py``, and one line in ``pipelines/competitions.py`` lists it. The shared stages (data,
train, blend, submit, compare) ask that object and its parts, never a competition's name:

    Competition
      name, slug                 the --comp name, the Kaggle competition slug (API downloads, submissions)
      task                       Task: binary / multi-class, id column, prediction columns, metric
      raw                        RawRules: which files are competition data, validation, summary
      features                   the features stage's module ("pipelines.<name>.features": add_arguments, main)
      train_data(source, spec, options, ctx) -> TrainData   rows, labels, folds, ids of the features
      train_options              dataclass of the competition's own train-stage options (e.g. an input size), or None
      models                     ModelRegistry: the model specs this competition trains
      default_models(ctx)        the names ``MODEL=all`` trains
      submission                 SubmissionFormat: the reference ids' file, test predictions -> CSV frame
      sample                     SampleGenerator or None (no built-in sample: ``--source sample`` refuses)
      archive_password_env       environment variable holding an encrypted archive's password, or None
      profiles                   {source label: {model or "*": {option: value}}}: short settings per source

Optional parts are ``None`` or have defaults; a competition declares only what it has (a tabular
competition with plain CSVs needs no archive rules, no sample and no submission options). Everything
heavy (pandas readers, TensorFlow) is imported lazily by the parts, so listing the competitions is cheap.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from pipelines.common.task import Task

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from pipelines.common.models import ModelRegistry, ModelSpec, RunContext


@runtime_checkable
class RawRules(Protocol):
    """What the data stage needs to know about a competition's raw files (``pipelines.<name>.data``)."""

    marker: str  # a file or folder every complete raw/ has at its top (a wrapper folder is hoisted to it)

    def is_data_name(self, rel: str) -> bool:
        """Whether a file or folder (its path inside the user's folder or archive) is this competition's data."""

    def keep(self, rel: str) -> bool:
        """Whether a file of an imported folder belongs in raw/ (others are pruned)."""

    def looks_like(self, names: set[str]) -> bool:
        """Whether names seen in a source look like this competition's data (to name a wrong competition)."""

    def validate(self, raw_dir: Path) -> dict:
        """Check raw/; return counts, class balance, ``warnings``, ``excluded`` files; StageError when unusable."""

    def summary_lines(self, report: dict) -> list[str]:
        """Lines describing the data, printed after the data stage."""


class ModuleRules:
    """RawRules read from a module's functions (``is_data_name``, ``keep``, ``looks_like``, ``validate``,
    ``summary_lines``, ``MARKER``), with the optional hooks ``archive_target``, ``normalize`` and
    ``archive_password`` defaulting to doing nothing."""

    def __init__(self, module_name: str):
        self.module_name = module_name

    @property
    def module(self):
        import importlib

        return importlib.import_module(self.module_name)

    @property
    def marker(self) -> str:
        return self.module.MARKER

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(self.module, name, None)
        if value is not None:
            return value
        if name in OPTIONAL_RAW_HOOKS:
            return OPTIONAL_RAW_HOOKS[name]
        raise AttributeError(f"{self.module_name} defines no {name}")


# Hooks a competition's raw rules may define; these defaults do nothing.
OPTIONAL_RAW_HOOKS: dict[str, Callable] = {
    "archive_target": lambda archive, members: None,  # sub-folder of raw/ an archive unpacks into
    "normalize": lambda root: None,                   # rearrange unpacked files into Kaggle's layout
    "archive_password": lambda folder: None,          # a password the competition's files carry in ``folder``
}


@runtime_checkable
class SampleGenerator(Protocol):
    """A built-in synthetic sample in the competition's exact schema (``--source sample``)."""

    version: str                   # bumped when the generated files change (the data stage re-generates)
    options: type                  # dataclass of the generator's options (fields: default, help metadata)
    kaggle_size: dict[str, Any]    # the option values of Kaggle's sizes (``--size kaggle``)

    def generate(self, raw_dir: Path, seed: int, **options) -> None:
        """Write the sample's raw files into raw_dir."""


@dataclass(frozen=True)
class FunctionSample:
    """A SampleGenerator from a function ``generate(raw_dir, seed=..., **options)`` and an options dataclass."""

    version: str
    options: type
    generate_fn: str  # "module:function", imported when the sample is made
    kaggle_size: dict = field(default_factory=dict)

    def generate(self, raw_dir: Path, seed: int, **options) -> None:
        import importlib

        module, _, fn = self.generate_fn.partition(":")
        getattr(importlib.import_module(module), fn)(raw_dir, seed=seed, **options)


@runtime_checkable
class SubmissionFormat(Protocol):
    """How test predictions become the leaderboard file (the columns come from the Task)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The blend stage's options of this competition's submissions (may add none)."""

    def sample_submission_path(self, raw_dir: Path) -> Path:
        """The sample submission a new file must match (its ids are the reference)."""

    def scored_submission_path(self, raw_dir: Path) -> Path:
        """The sample submission an upload must match (the format Kaggle scores now)."""

    def to_submission(self, test_pred: "pd.DataFrame", args: argparse.Namespace) -> "pd.DataFrame":
        """A test.parquet frame (id, prediction columns) -> the submission frame (id column, predictions)."""


class ModuleSubmission:
    """SubmissionFormat from a module's functions; ``add_arguments`` and ``scored_submission_path`` optional."""

    def __init__(self, module_name: str):
        self.module_name = module_name

    @property
    def module(self):
        import importlib

        return importlib.import_module(self.module_name)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add = getattr(self.module, "add_arguments", None)
        if add is not None:
            add(parser)

    def sample_submission_path(self, raw_dir: Path) -> Path:
        return self.module.sample_submission_path(raw_dir)

    def scored_submission_path(self, raw_dir: Path) -> Path:
        return getattr(self.module, "scored_submission_path", self.module.sample_submission_path)(raw_dir)

    def to_submission(self, test_pred, args):
        return self.module.to_submission(test_pred, args)


@dataclass
class TrainData:
    """What the CV engine needs of a competition's features for one model: the train rows and the test ids.

    ``features`` is the competition's own reader (handed to the model's builder); ``inputs`` the files the
    run depends on (their fingerprints go into run.json and the train stage's lock)."""

    y: np.ndarray
    folds: np.ndarray                     # fold id per train row; -1: fit-only (never validated)
    train_ids: np.ndarray
    test_ids: np.ndarray | None           # None: no test set
    inputs: Sequence[Path]                # lock files of the features the model reads
    features: Any = None                  # the competition's features reader, for the model's builder
    fit_exclude: np.ndarray | None = None  # (rows, folds) bool: keep a row out of chosen folds' training parts
    extra_params: dict | None = None      # recorded in params.json beside the model's (what the rows are)
    description: str = ""                 # one log line: rows, size, ...


@dataclass(frozen=True)
class Competition:
    name: str
    slug: str
    task: Task
    raw: RawRules
    features: str                                          # the features stage module
    train_data: Callable[[str, "ModelSpec", Any, "RunContext"], TrainData]
    models: "ModelRegistry"
    submission: SubmissionFormat
    default_models: Callable[["RunContext"], list[str]] | Sequence[str] | None = None
    sample: SampleGenerator | None = None
    archive_password_env: str | None = None
    profiles: dict = field(default_factory=dict)
    train_options: type | None = None
    description: str = ""

    def model_names_for_all(self, ctx: "RunContext") -> list[str]:
        """The models ``MODEL=all`` trains: the declared default set (every model when none is declared)."""
        if self.default_models is None:
            return list(self.models.names())
        if callable(self.default_models):
            return list(self.default_models(ctx))
        return list(self.default_models)

    def profile(self, source_label: str, model: str) -> dict:
        """Option values the source's profile sets for ``model`` (``"*"``: for every model)."""
        by_model = self.profiles.get(source_label) or {}
        return {**by_model.get("*", {}), **by_model.get(model, {})}
