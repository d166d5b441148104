"""The blend stage on synthetic model runs with a known best blend (binary and multi-class)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipelines import competitions, config
from pipelines.__main__ import EXIT_STAGE_ERROR
from pipelines.__main__ import main as cli
from pipelines.common import blend
from pipelines.common.cv import make_folds, run_cv, score
from pipelines.common.io import save_npy
from pipelines.common.log import StageError
from pipelines.common.submission import validate_submission_file
from pipelines.common.task import Task
from compare_helpers import FixedModel
from quora_model_helpers import write_fake_raw

N, N_TEST = 600, 40
CLASSES = ["Type_1", "Type_2", "Type_3"]
BINARY = Task(kind="binary", id_column="test_id", pred_columns=("is_duplicate",))


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def binary_predictions(y, rng, strength, n=None):
    """Probabilities with signal ``strength`` about y (0 = pure noise)."""
    n = len(y) if n is None else n
    target = y if len(y) == n else rng.integers(0, 2, n)
    return sigmoid(strength * (2 * target - 1) + rng.normal(0, 1.2, n))


def multiclass_predictions(y, rng, strength):
    logits = rng.normal(0, 1.0, (len(y), 3))
    logits[np.arange(len(y)), y] += strength
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def write_runs(comp, runs: dict, y, folds, task="binary", classes=("is_duplicate",), test_ids=None):
    test_ids = np.arange(N_TEST) if test_ids is None else test_ids
    for name, (oof, test) in runs.items():
        run_cv(FixedModel(name, oof, test), comp=comp, source="sample", out_dir=config.model_dir(comp, "sample", name),
               y=y, folds=folds, train_ids=np.arange(100, 100 + len(y)), test_ids=test_ids, task=task,
               class_names=list(classes), seed=1)


@pytest.fixture
def binary_setup(project_dirs):
    rng = np.random.default_rng(0)
    y = (rng.random(N) < 0.37).astype(int)
    folds = make_folds(y, 5, seed=42)
    runs = {
        "good": (binary_predictions(y, rng, 1.4), rng.random(N_TEST)),
        "other": (binary_predictions(y, rng, 1.3), rng.random(N_TEST)),  # independent errors: blending helps
        "noise": (rng.uniform(0.05, 0.95, N), rng.random(N_TEST)),
    }
    write_runs("quora", runs, y, folds)
    write_fake_raw(config.raw_dir("quora", "sample"), N_TEST)
    save_npy(config.features_dir("quora", "sample") / "labels.npy", y.astype(np.int8))
    return y, folds, runs


def test_weights_pick_the_truthful_model():
    rng = np.random.default_rng(1)
    y = (rng.random(2000) < 0.4).astype(int)
    P = np.stack([BINARY.as_class_probs(binary_predictions(y, rng, 2.5)),
                  BINARY.as_class_probs(rng.uniform(0.01, 0.99, len(y)))])
    w = blend.fit_weights(P, y)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[0] > 0.95

    y3 = rng.integers(0, 3, 2000)
    P3 = np.stack([rng.dirichlet(np.ones(3), len(y3)), multiclass_predictions(y3, rng, 3.0)])
    w3 = blend.fit_weights(P3, y3)
    assert w3[1] > 0.95 and w3.sum() == pytest.approx(1.0)
    blended = blend.apply_weights(w3, P3)
    assert np.allclose(blended.sum(axis=1), 1.0)


def test_cross_fitted_score_is_honest():
    """With many pure-noise models an in-sample fit flatters itself; the reported (cross-fitted) score
    does not, and equals the score of each fold predicted by the weights fitted without it."""
    rng = np.random.default_rng(2)
    y = (rng.random(150) < 0.4).astype(int)
    folds = make_folds(y, 5, seed=3)
    noise = np.stack([BINARY.as_class_probs(rng.uniform(0.05, 0.95, len(y))) for _ in range(25)])
    data = {"names": [f"m{i}" for i in range(25)], "y": y, "folds": folds, "task": BINARY,
            "oof": noise, "test": noise[:, :10]}
    result = blend.blend_runs(data, "weights")
    assert result["metrics"]["in_sample_log_loss"] < result["metrics"]["log_loss"]
    manual = np.zeros(len(y))
    for k, fit in enumerate(result["params"]["fold_fits"]):
        w = np.array([fit["weights"][n] for n in data["names"]])
        rows = folds == k
        assert w @ noise[:, rows, 1] == pytest.approx(result["oof"][rows, 1])
        manual[rows] = w @ noise[:, rows, 1]
    assert result["metrics"]["log_loss"] == pytest.approx(score("binary", y, manual)["log_loss"])


def test_blend_stage_writes_a_model_run_and_a_valid_submission(binary_setup, capsys):
    y, folds, runs = binary_setup
    assert cli(["blend", "--comp", "quora", "--source", "sample", "--method", "weights"]) == 0
    out = config.model_dir("quora", "sample", "blend")
    oof = pd.read_parquet(out / "oof.parquet")
    ref = pd.read_parquet(config.model_dir("quora", "sample", "good") / "oof.parquet")
    assert list(oof.columns) == list(ref.columns)
    assert oof[["id", "fold", "target"]].equals(ref[["id", "fold", "target"]])
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["folds"]) == 5 and set(metrics["models"]) == {"good", "other", "noise"}
    singles = {m: s["log_loss"] for m, s in metrics["models"].items()}
    assert metrics["log_loss"] < min(singles.values())  # honest score, still better than each model
    weights = json.loads((out / "params.json").read_text())["params"]["weights"]
    assert sum(weights.values()) == pytest.approx(1.0)
    assert weights["noise"] < 0.05 and weights["good"] > weights["other"] > 0.2
    for name in ("run.json", "test.parquet"):
        assert (out / name).exists()

    table = capsys.readouterr().out
    for name in ("good", "other", "noise", "blend (weights)", "log loss", "AUC"):
        assert name in table

    written = list(config.submissions_dir("quora").glob("*.csv"))
    assert len(written) == 1 and written[0].name.startswith("sample-blend-weights-")
    validate_submission_file("quora", written[0], "sample")
    test = pd.read_parquet(out / "test.parquet")
    from pipelines.quora.submission import prior_correction

    submitted = pd.read_csv(written[0])
    assert submitted["is_duplicate"].to_numpy() == pytest.approx(
        prior_correction(test["is_duplicate"].to_numpy(), y.mean(), 0.165))

    # The same command again: nothing to do, no second file. (The CLI sets up its own log handler,
    # writing to the captured stderr.)
    assert cli(["blend", "--comp", "quora", "--source", "sample", "--method", "weights"]) == 0
    log_text = capsys.readouterr().err
    assert "up to date" in log_text and "already written" in log_text
    assert len(list(config.submissions_dir("quora").glob("*.csv"))) == 1
    # Another option for the submission only: a new file, the blend itself untouched.
    assert cli(["blend", "--comp", "quora", "--source", "sample", "--method", "weights", "--no-prior-correction",
                "--name", "raw"]) == 0
    assert (config.submissions_dir("quora") / "raw.csv").exists()


def test_stack_method_and_model_subset(binary_setup):
    y, folds, runs = binary_setup
    assert cli(["blend", "--comp", "quora", "--source", "sample", "--method", "stack", "--models", "good,other",
                "--no-submission"]) == 0
    metrics = json.loads((config.model_dir("quora", "sample", "blend") / "metrics.json").read_text())
    assert metrics["method"] == "stack" and set(metrics["models"]) == {"good", "other"}
    assert metrics["log_loss"] < min(s["log_loss"] for s in metrics["models"].values())
    assert not config.submissions_dir("quora").exists() or not list(config.submissions_dir("quora").iterdir())
    with pytest.raises(StageError, match="no finished run"):
        blend.finished_runs(config.models_dir("quora", "sample"), ["good", "missing"])


def test_runs_on_other_folds_or_rows_are_refused(binary_setup):
    y, folds, runs = binary_setup
    write_runs("quora", {"shifted": runs["good"]}, y, make_folds(y, 5, seed=7))
    task = competitions.get("quora").task
    with pytest.raises(StageError, match="other folds"):
        blend.load_runs(blend.finished_runs(config.models_dir("quora", "sample")), task)
    assert cli(["blend", "--comp", "quora", "--source", "sample"]) == EXIT_STAGE_ERROR  # one line, no traceback
    bad_test = config.model_dir("quora", "sample", "shifted")
    write_runs("quora", {"shifted": runs["good"]}, y, folds, test_ids=np.arange(1000, 1000 + N_TEST))
    assert (bad_test / "oof.parquet").exists()
    with pytest.raises(StageError, match="different test rows"):
        blend.load_runs(blend.finished_runs(config.models_dir("quora", "sample")), task)


def test_no_models_is_a_stage_error(project_dirs):
    with pytest.raises(StageError, match="no finished models .*`make train COMP=quora SOURCE=sample` first"):
        blend.main(blend_args("quora"))


def blend_args(comp, *argv):
    from pipelines.__main__ import base_parser

    parser = base_parser(add_help=False)
    blend.add_arguments(parser, comp)
    return parser.parse_args(["blend", "--comp", comp, "--source", "sample", *argv])


def test_multiclass_blend(project_dirs):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 450)
    folds = make_folds(y, 3, seed=42)
    test_ids = np.array([f"{i}.jpg" for i in range(N_TEST)], dtype=object)
    runs = {"cnn": (multiclass_predictions(y, rng, 2.0), rng.dirichlet(np.ones(3), N_TEST)),
            "noise": (rng.dirichlet(np.ones(3), len(y)), rng.dirichlet(np.ones(3), N_TEST))}
    write_runs("cervix", runs, y, folds, task="multiclass", classes=CLASSES, test_ids=test_ids)
    for method in ("weights", "stack"):
        assert blend.main(blend_args("cervix", "--method", method, "--no-submission")) == 0
        out = config.model_dir("cervix", "sample", "blend")
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["task"] == "multiclass" and "auc" not in metrics and len(metrics["folds"]) == 3
        assert metrics["log_loss"] <= metrics["models"]["cnn"]["log_loss"] + 0.01
        test = pd.read_parquet(out / "test.parquet")
        assert list(test.columns) == ["id", *CLASSES] and np.allclose(test[CLASSES].sum(axis=1), 1.0)
        assert test["id"].tolist() == list(test_ids)
    assert blend.fit_weights(np.stack([runs["cnn"][0], runs["noise"][0]]), y)[0] > 0.9


def test_cervix_blend_writes_a_valid_submission(project_dirs):
    pytest.importorskip("pipelines.cervix.submission")
    from pipelines.common.io import write_csv

    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 300)
    folds = make_folds(y, 3, seed=42)
    names = np.array([f"{i}.jpg" for i in range(N_TEST)], dtype=object)
    runs = {"cnn": (multiclass_predictions(y, rng, 2.0), rng.dirichlet(np.ones(3), N_TEST)),
            "cnn2": (multiclass_predictions(y, rng, 1.5), rng.dirichlet(np.ones(3), N_TEST))}
    write_runs("cervix", runs, y, folds, task="multiclass", classes=CLASSES, test_ids=names)
    sample = pd.DataFrame({"image_name": sorted(names), **{c: 1 / 3 for c in CLASSES}})
    write_csv(config.raw_dir("cervix", "sample") / "sample_submission_stg1.csv", sample)
    assert blend.main(blend_args("cervix", "--name", "cervix-test")) == 0
    path = config.submissions_dir("cervix") / "cervix-test.csv"
    validate_submission_file("cervix", path, "sample")
    assert np.allclose(pd.read_csv(path)[CLASSES].sum(axis=1), 1.0)


def test_blend_options_are_the_given_competitions_own(capsys):
    import argparse

    def flags(comp=None):
        parser = argparse.ArgumentParser()
        blend.add_arguments(parser, comp)
        return {opt for action in parser._actions for opt in action.option_strings}

    assert "--test-positive-rate" in flags("quora") and "--cervix-min-prob" not in flags("quora")
    assert "--cervix-min-prob" in flags("cervix") and "--test-positive-rate" not in flags("cervix")
    assert not flags() & {"--test-positive-rate", "--no-prior-correction", "--cervix-min-prob"}
    assert {"--method", "--models", "--strict", "--allow-stale"} <= flags()
    with pytest.raises(SystemExit):
        cli(["blend", "--comp", "quora", "--help"])
    out = capsys.readouterr().out
    assert "--test-positive-rate" in out and "--cervix" not in out and "cervix submission" not in out


def test_a_run_predicting_other_columns_is_refused(binary_setup):
    y, folds, runs = binary_setup
    write_runs("quora", {"renamed": runs["good"]}, y, folds, classes=("p_duplicate",))
    with pytest.raises(StageError, match=r"renamed predicts columns \['p_duplicate'\] but the task's are "
                                         r"\['is_duplicate'\]"):
        blend.load_runs(blend.finished_runs(config.models_dir("quora", "sample")), competitions.get("quora").task)


def test_auto_fits_both_methods_and_uses_the_better(binary_setup, capsys):
    assert cli(["blend", "--comp", "quora", "--source", "sample", "--no-submission"]) == 0
    metrics = json.loads((config.model_dir("quora", "sample", "blend") / "metrics.json").read_text())
    assert set(metrics["methods"]) == {"weights", "stack"}
    assert metrics["method"] == min(metrics["methods"], key=metrics["methods"].get)
    assert metrics["log_loss"] == pytest.approx(min(metrics["methods"].values()))


def test_runs_patterns_select_what_is_blended(binary_setup, capsys):
    assert cli(["blend", "--comp", "quora", "--source", "sample", "--runs", "go*,oth*", "--no-submission"]) == 0
    params = json.loads((config.model_dir("quora", "sample", "blend") / "params.json").read_text())["params"]
    assert params["models"] == ["good", "other"]
    assert cli(["blend", "--comp", "quora", "--source", "sample", "--runs", "nothing*"]) == EXIT_STAGE_ERROR
    assert "--runs nothing*: no finished run" in capsys.readouterr().err
