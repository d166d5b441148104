"""The comparison report on real-format model folders made by the CV engine from fake models."""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import shutil

import numpy as np
import pytest

from pipelines import competitions, config
from pipelines.__main__ import EXIT_STAGE_ERROR
from pipelines.common import compare, io
from pipelines.common.cv import load_predictions, make_folds, run_cv
from pipelines.common.io import read_json, write_json
from pipelines.common.log import StageError
from pipelines.common.records import input_fingerprints

from compare_helpers import (CLASS_NAMES, CalibratedModel, FakeProjects, NoisyOracleModel, TinyLightGBM,
                             calibrated_data, point_config, prior_log_loss, set_finished, train_fake)

EXPECTED = ("strong", "weak", "nn", "lstm")  # lstm is never trained: it must be reported missing
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def restore_logging():
    """The CLI's setup_logging replaces the root handlers; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def fake_projects(tmp_path_factory):
    return FakeProjects(tmp_path_factory)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """Project root and output folders in tmp (input paths are recorded relative to the root)."""
    return point_config(monkeypatch, tmp_path)


@pytest.fixture
def quora_models(project, fake_projects):
    return fake_projects.copy_into(project, "quora")


@pytest.fixture
def cervix_models(project, fake_projects):
    return fake_projects.copy_into(project, "cervix")


def rows_by_model(report):
    return {r["model"]: r for r in report["rows"]}


@pytest.mark.parametrize("comp", ["quora", "cervix"])
def test_table_has_every_model_with_its_metrics_sorted_and_the_baselines(project, fake_projects, comp):
    built = fake_projects.copy_into(project, comp)
    report = compare.compare(comp, "sample", EXPECTED, with_figures=False)

    rows = rows_by_model(report)
    assert set(rows) == {"strong", "weak", "nn", "blend", "uniform (reference)", "class prior (reference)"}
    for name in ("strong", "weak", "nn", "blend"):
        metrics = read_json(config.model_dir(comp, "sample", name) / "metrics.json")
        row = rows[name]
        assert row["log_loss"] == metrics["log_loss"]
        assert row["log_loss_mean"] == metrics["log_loss_mean"]
        assert row["log_loss_std"] == metrics["log_loss_std"]
        assert row["fold_log_loss"] == [f["log_loss"] for f in metrics["folds"]]
        assert len(row["fold_log_loss"]) == config.N_FOLDS
        assert row["accuracy"] == metrics["accuracy"]
        assert row["auc"] == (metrics["auc"] if comp == "quora" else None)
        assert row["fit_seconds"] == metrics["fit_seconds"]
        assert row["seed"] == config.SEED
        record = read_json(config.model_dir(comp, "sample", name) / "run.json")
        assert row["finished"] == record["finished"]
        assert row["git_commit"] == record["git"]["commit"]
        assert not row["stale"], row["stale_reasons"]
    assert rows["blend"]["kind"] == "blend"
    assert rows["strong"]["params"] == "epochs=0, noise=1, strength=2.5"  # epochs is a key parameter: first
    assert rows["blend"]["params"] == "weights: nn=3, strong=1, weak=2"  # the blend shows its models' weights

    losses = [r["log_loss"] for r in report["rows"]]
    assert losses == sorted(losses)
    assert [r["rank"] for r in report["rows"] if r["kind"] != "reference"] == [1, 2, 3, 4]
    assert report["rows"][0]["model"] == "strong"  # the fake models' quality order is known
    n_classes = len(CLASS_NAMES[comp]) if comp == "cervix" else 2
    assert rows["uniform (reference)"]["log_loss"] == pytest.approx(math.log(n_classes), abs=1e-12)
    assert rows["class prior (reference)"]["log_loss"] == pytest.approx(prior_log_loss(built["y"], n_classes),
                                                                      abs=1e-9)
    assert report["n_train"] == len(built["y"])
    assert report["versions"]["numpy"] == {np.__version__: sorted(["strong", "weak", "nn", "blend"])}

    md = (config.reports_dir(comp, "sample") / "comparison.md").read_text()
    for name in ("strong", "weak", "nn", "blend", "uniform (reference)", "class prior (reference)"):
        assert f"| {name} |" in md or f"| *{name}* |" in md
    assert f"{rows['strong']['log_loss']:.5f}" in md
    assert md.index("| strong |") < md.index("| weak |")
    assert f"numpy {np.__version__}" in md
    assert read_json(config.reports_dir(comp, "sample") / "comparison.json")["rows"][0]["model"] == "strong"


def test_missing_model_is_named_with_its_train_command(quora_models):
    report = compare.compare("quora", "sample", EXPECTED, with_figures=False)
    assert report["missing"] == [{"model": "lstm", "command": "make train COMP=quora SOURCE=sample MODEL=lstm"}]
    md = (config.reports_dir("quora", "sample") / "comparison.md").read_text()
    assert "lstm is not trained: `make train COMP=quora SOURCE=sample MODEL=lstm`" in md
    assert "make train COMP=quora SOURCE=sample MODEL=lstm" in compare.render_text(report)


def test_missing_blend_is_named_with_the_blend_command(project, fake_projects):
    fake_projects.copy_into(project, "cervix", blend=False)
    report = compare.compare("cervix", "sample", ("strong", "weak", "nn"), with_figures=False)
    assert report["missing"] == [{"model": "blend", "command": "make blend COMP=cervix SOURCE=sample"}]


def test_expected_models_are_the_competitions_registry():
    for comp in ("quora", "cervix"):
        assert compare.expected_models(comp) == tuple(competitions.get(comp).models.names())
    assert {"bow_svm", "bow_lr", "lgbm", "siamese_lstm", "siamese_gru"} == set(compare.expected_models("quora"))


def test_unknown_expectations_are_said_not_guessed(quora_models, monkeypatch, caplog):
    import dataclasses

    class BrokenRegistry:
        def names(self):
            raise ImportError("No module named 'pipelines.quora.models.gone'")

    quora = dataclasses.replace(competitions.get("quora"), models=BrokenRegistry())
    monkeypatch.setitem(competitions._loaded, "quora", quora)
    with caplog.at_level(logging.WARNING):
        expected = compare.expected_models("quora")
    assert expected is None
    assert "could not read the expected model list of quora (its model registry: ImportError" in caplog.text
    report = compare.compare("quora", "sample", expected, with_figures=False)
    assert report["missing"] == []  # only the blend would be expected, and it is trained
    assert "could not be read" in compare.render_text(report)


def test_model_trained_on_changed_features_is_stale(quora_models):
    quora_models["weak_only"].write_text("weak model features v2\n")  # features rebuilt after training
    report = compare.compare("quora", "sample", EXPECTED, with_figures=False)
    rows = rows_by_model(report)
    assert rows["weak"]["stale"]
    assert rows["weak"]["stale_reasons"] == ["input features/weak_only.txt changed since training"]
    assert not rows["strong"]["stale"] and not rows["nn"]["stale"]
    assert rows["blend"]["stale_reasons"] == ["built on stale model(s): weak"]
    md = (config.reports_dir("quora", "sample") / "comparison.md").read_text()
    assert "**STALE: input features/weak_only.txt changed since training**" in md
    assert ("weak is STALE (input features/weak_only.txt changed since training): "
            "re-run `make train COMP=quora SOURCE=sample MODEL=weak`") in md
    assert "re-run `make blend COMP=quora SOURCE=sample`" in md


def test_vanished_input_and_changed_manifest_make_runs_stale(quora_models):
    quora_models["shared"].unlink()
    assert all(rows_by_model(compare.compare("quora", "sample", EXPECTED, with_figures=False))[m]["stale"]
               for m in ("strong", "weak", "nn"))
    reasons = rows_by_model(compare.compare("quora", "sample", EXPECTED, with_figures=False))["nn"]["stale_reasons"]
    assert reasons == ["input features/shared.txt no longer exists"]

    run_path = config.model_dir("quora", "sample", "strong") / "run.json"
    record = read_json(run_path)
    record["data_manifest_sha256"] = "0" * 64  # trained on another version of the data
    write_json(run_path, record)
    reasons = rows_by_model(compare.compare("quora", "sample", EXPECTED, with_figures=False))["strong"]["stale_reasons"]
    assert "data manifest no longer exists" in reasons


def test_blend_older_than_a_retrained_model_is_stale(cervix_models):
    blend_record = read_json(config.model_dir("cervix", "sample", "blend") / "run.json")
    report = compare.compare("cervix", "sample", EXPECTED, with_figures=False)
    assert not rows_by_model(report)["blend"]["stale"]
    # "nn" re-trained an hour after the blend was made
    later = (dt.datetime.fromisoformat(blend_record["finished"]) + dt.timedelta(hours=1)).isoformat()
    set_finished(config.model_dir("cervix", "sample", "nn"), later)
    blend = rows_by_model(compare.compare("cervix", "sample", EXPECTED, with_figures=False))["blend"]
    assert blend["stale"]
    assert len(blend["stale_reasons"]) == 1
    assert blend["stale_reasons"][0].startswith("re-trained after the blend (")
    assert blend["stale_reasons"][0].endswith(f"): nn ({compare.short_time(later)})")
    assert blend["command"] == "make blend COMP=cervix SOURCE=sample"


def test_incomplete_and_unreadable_runs_are_reported_with_their_commands(quora_models):
    y = quora_models["y"]
    model = NoisyOracleModel("halfway", y, 2, 1.0)
    run_cv(model, comp="quora", source="sample", out_dir=config.model_dir("quora", "sample", "halfway"), y=y,
           folds=make_folds(y, config.N_FOLDS, 0), train_ids=np.arange(len(y)), test_ids=None, task="binary",
           class_names=["is_duplicate"], seed=0, only_folds=[0, 1], progress=False)
    (config.model_dir("quora", "sample", "nn") / "metrics.json").write_text("{ truncated")
    report = compare.compare("quora", "sample", EXPECTED + ("halfway",), with_figures=False)
    problems = {p["model"]: p for p in report["problems"]}
    assert problems["halfway"]["problem"].startswith("incomplete: 2 fold(s) done")
    assert problems["halfway"]["command"].startswith("make train COMP=quora SOURCE=sample MODEL=halfway")
    assert problems["nn"]["problem"].startswith("unreadable metrics.json")
    assert "nn" not in rows_by_model(report) and "halfway" not in rows_by_model(report)
    assert "blend" in rows_by_model(report)
    assert [m["model"] for m in report["missing"]] == ["lstm"]  # halfway and nn are problems, not missing


def test_model_trained_on_other_rows_is_flagged_not_comparable(quora_models):
    y = quora_models["y"][:100]
    train_fake("quora", "sample", NoisyOracleModel("subset", y, 2, 1.0), y)
    report = compare.compare("quora", "sample", EXPECTED, with_figures=False)
    assert report["n_train"] == len(quora_models["y"])  # the baselines use the rows most models used
    problem = next(p for p in report["problems"] if p["model"] == "subset")
    assert problem["problem"] == f"trained on 100 rows, the others on {len(quora_models['y'])}: " \
                                 "its score is not comparable"


def test_quora_figures_written_and_non_empty(quora_models):
    report = compare.compare("quora", "sample", EXPECTED)
    out = config.reports_dir("quora", "sample")
    assert report["figures"] == ["scores.png", "roc.png", "calibration.png", "oof_correlation.png",
                                 "learning_curve_nn.png"]
    for name in report["figures"]:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
        assert f"![{name[:-4]}]({name})" in (out / "comparison.md").read_text()
    assert not (out / "confusion.png").exists()
    # a model deleted since: its learning curve leaves the report folder too
    shutil.rmtree(config.model_dir("quora", "sample", "nn"))
    assert "learning_curve_nn.png" not in compare.compare("quora", "sample", EXPECTED)["figures"]
    assert not (out / "learning_curve_nn.png").exists()


def test_cervix_figures_and_confusion_counts(cervix_models):
    report = compare.compare("cervix", "sample", EXPECTED)
    out = config.reports_dir("cervix", "sample")
    assert report["figures"] == ["scores.png", "confusion.png", "calibration.png", "oof_correlation.png",
                                 "learning_curve_nn.png"]
    for name in report["figures"]:
        assert (out / name).read_bytes().startswith(PNG_MAGIC) and (out / name).stat().st_size > 5000
    oof, _ = load_predictions(config.model_dir("cervix", "sample", "strong"))
    panel = compare.confusion_panel("strong", oof, competitions.get("cervix").task)
    cm = panel["matrix"]
    assert cm.sum() == len(cervix_models["y"])
    assert list(cm.sum(axis=1)) == list(np.bincount(cervix_models["y"], minlength=3))
    acc = read_json(config.model_dir("cervix", "sample", "strong") / "metrics.json")["accuracy"]
    assert np.trace(cm) / cm.sum() == pytest.approx(acc)


def test_roc_points_match_the_recorded_auc(quora_models):
    oof, _ = load_predictions(config.model_dir("quora", "sample", "weak"))
    curve = compare.roc_points("weak", oof, competitions.get("quora").task)
    assert curve["auc"] == pytest.approx(read_json(config.model_dir("quora", "sample", "weak") / "metrics.json")["auc"])
    assert curve["fpr"][0] == 0 and curve["fpr"][-1] == 1 and curve["tpr"][-1] == 1
    assert np.all(np.diff(curve["tpr"]) >= 0)


# --- calibration, OOF correlation, LightGBM importance ----------------------------------------------------------

@pytest.mark.parametrize("comp", ["quora", "cervix"])
def test_calibration_of_a_calibrated_run_lies_on_the_diagonal(project, comp):
    y, probs = calibrated_data(comp, 3000)
    train_fake(comp, "sample", CalibratedModel("calibrated", probs), y)
    train_fake(comp, "sample", CalibratedModel("overconfident", probs, sharpen=3.0), y)
    report = compare.compare(comp, "sample", None)
    calibration = report["calibration"]
    assert calibration["what"] == ("positive class is_duplicate" if comp == "quora"
                                   else "every class one-vs-rest, pooled")
    curves = {c["model"]: c for c in calibration["curves"]}
    assert set(curves) == {"calibrated", "overconfident"}
    good, bad = curves["calibrated"], curves["overconfident"]
    assert good["n"] == len(y) * (1 if comp == "quora" else 3)  # multi-class: one pair per row and class
    assert len(good["prob_pred"]) == compare.CALIBRATION_BINS
    gaps = np.abs(np.array(good["prob_true"]) - np.array(good["prob_pred"]))
    assert gaps.max() < 0.08 and good["gap"] < 0.03  # on the diagonal, up to sampling noise
    assert bad["gap"] > 0.08  # a sharpened run is far from it
    # quantile bins: each holds about a tenth of the predictions, so the bin means spread over [0, 1]
    assert good["prob_pred"][0] < 0.1 and good["prob_pred"][-1] > 0.7
    assert sum(good["hist_fraction"]) == pytest.approx(1.0)
    assert good["hist_fraction"][0] == pytest.approx(np.mean(calibration_pooled(comp, probs) < 0.05))
    out = config.reports_dir(comp, "sample")
    assert "calibration.png" in report["figures"]
    assert (out / "calibration.png").read_bytes().startswith(PNG_MAGIC)
    assert "![calibration](calibration.png)" in (out / "comparison.md").read_text()
    saved = read_json(out / "comparison.json")["calibration"]["curves"]
    assert saved[0]["prob_true"] == pytest.approx(report["calibration"]["curves"][0]["prob_true"])


def calibration_pooled(comp, probs):
    return probs[:, 1] if comp == "quora" else probs.ravel()


def test_calibration_lines_are_capped_and_keep_the_blend():
    ranked = [f"m{i}" for i in range(10)] + ["blend"]
    assert compare._with_blend(ranked, {"blend"}, 6) == ["m0", "m1", "m2", "m3", "m4", "blend"]
    assert compare._with_blend(["blend", "a", "b"], {"blend"}, 2) == ["blend", "a"]
    assert compare._with_blend(["a", "b", "c"], set(), 2) == ["a", "b"]


@pytest.mark.parametrize("comp", ["quora", "cervix"])
def test_oof_correlation_aligns_runs_on_their_ids(project, fake_projects, comp):
    import pandas as pd

    built = fake_projects.copy_into(project, comp)
    models = config.models_dir(comp, "sample")
    shutil.copytree(models / "strong", models / "strong_copy")
    oof_path = models / "strong_copy" / "oof.parquet"
    pd.read_parquet(oof_path).sample(frac=1.0, random_state=0).to_parquet(oof_path, index=False)  # other row order
    y = built["y"][:100]
    train_fake(comp, "sample", NoisyOracleModel("subset", y, 2 if comp == "quora" else 3, 1.0), y)

    report = compare.compare(comp, "sample", EXPECTED)
    corr = report["oof_correlation"]
    names = corr["runs"]
    assert set(names) == {"strong", "strong_copy", "weak", "nn", "blend"}
    assert corr["left_out"] == {"subset": "validated on other rows than the others"}
    assert corr["n_rows"] == len(built["y"])
    matrix = np.array(corr["matrix"])
    assert np.allclose(np.diag(matrix), 1.0) and np.allclose(matrix, matrix.T)
    at = {n: i for i, n in enumerate(names)}
    assert matrix[at["strong"], at["strong_copy"]] == pytest.approx(1.0)  # the same predictions, shuffled rows
    columns = CLASS_NAMES[comp]

    def vector(name):
        return pd.read_parquet(models / name / "oof.parquet").sort_values("id")[columns].to_numpy().ravel()

    expected = np.corrcoef(vector("strong"), vector("weak"))[0, 1]
    assert matrix[at["strong"], at["weak"]] == pytest.approx(expected)
    assert expected < 0.95  # independent noise: clearly below 1
    assert "oof_correlation.png" in report["figures"]
    out = config.reports_dir(comp, "sample")
    assert (out / "oof_correlation.png").read_bytes().startswith(PNG_MAGIC)
    assert read_json(out / "comparison.json")["oof_correlation"]["runs"] == names


@pytest.mark.parametrize("comp", ["quora", "cervix"])
def test_lightgbm_importance_names_the_strongest_feature_first(project, fake_projects, comp):
    lightgbm = pytest.importorskip("lightgbm")
    built = fake_projects.copy_into(project, comp)
    y = built["y"]
    key = "lgbm/tiny"  # a run of the registered model lgbm (in quora): <model>/<run>
    train_fake(comp, "sample", TinyLightGBM("lgbm", y, 2 if comp == "quora" else 3), y, key=key)
    # a model.txt that is no LightGBM model: detected by its content, not by the run's name
    (config.model_dir(comp, "sample", "weak") / "folds" / "fold_0" / "model.txt").write_text("C=1.0\n")

    report = compare.compare(comp, "sample", EXPECTED)
    assert list(report["feature_importance"]) == [key]
    table = report["feature_importance"][key]
    assert table["n_folds"] == config.N_FOLDS and table["importance"] == "gain"
    features = [f["feature"] for f in table["features"]]
    assert features[0] == "signal" and sorted(features) == sorted(TinyLightGBM.FEATURES)
    gains = [f["gain"] for f in table["features"]]
    assert gains == sorted(gains, reverse=True)
    assert sum(f["share"] for f in table["features"]) == pytest.approx(1.0)
    # the mean and std over the fold models, as LightGBM itself reports each fold's gain
    folds = config.model_dir(comp, "sample", key) / "folds"
    per_fold = []
    for k in range(config.N_FOLDS):
        booster = lightgbm.Booster(model_file=str(folds / f"fold_{k}" / "model.txt"))
        per_fold.append(dict(zip(booster.feature_name(), booster.feature_importance("gain"))))
    signal = [g["signal"] for g in per_fold]
    assert table["features"][0]["gain"] == pytest.approx(np.mean(signal))
    assert table["features"][0]["gain_std"] == pytest.approx(np.std(signal))
    assert len(compare.lightgbm_importance(folds.parent, top=2)["features"]) == 2

    out = config.reports_dir(comp, "sample")
    figure = compare.importance_file_name(key)
    assert figure == "importance_lgbm_tiny.png" and figure in report["figures"]
    assert (out / figure).read_bytes().startswith(PNG_MAGIC)
    assert "![importance_lgbm_tiny](importance_lgbm_tiny.png)" in (out / "comparison.md").read_text()
    saved = read_json(out / "comparison.json")["feature_importance"][key]["features"]
    assert [f["feature"] for f in saved] == features
    # the run gone: its picture leaves the report folder too
    shutil.rmtree(config.model_dir(comp, "sample", key))
    assert compare.compare(comp, "sample", EXPECTED)["feature_importance"] == {}
    assert not (out / figure).exists()


def test_a_failing_new_figure_is_a_warning_not_a_lost_report(quora_models, monkeypatch, caplog):
    from pipelines.common import plots

    compare.compare("quora", "sample", EXPECTED)
    out = config.reports_dir("quora", "sample")
    assert (out / "calibration.png").exists()

    def broken(*args, **kwargs):
        raise ValueError("no room")

    monkeypatch.setattr(plots, "plot_calibration_curves", broken)
    monkeypatch.setattr(compare, "oof_correlation", broken)
    with caplog.at_level(logging.WARNING):
        report = compare.compare("quora", "sample", EXPECTED)
    assert "calibration.png" not in report["figures"] and "oof_correlation.png" not in report["figures"]
    assert report["figures"] == ["scores.png", "roc.png", "learning_curve_nn.png"]
    assert "figure calibration.png failed: ValueError: no room" in caplog.text
    assert "oof_correlation failed: ValueError: no room" in caplog.text
    assert not (out / "calibration.png").exists()  # an old picture would no longer match the table
    assert report["calibration"]["curves"]  # the data is still in the report
    assert "| strong |" in (out / "comparison.md").read_text().replace("| 1 | strong |", "| strong |")


def test_markdown_is_written_atomically(quora_models, monkeypatch):
    out = config.reports_dir("quora", "sample")
    compare.compare("quora", "sample", EXPECTED, with_figures=False)
    before = (out / "comparison.md").read_bytes()
    (config.model_dir("quora", "sample", "weak") / "metrics.json").unlink()  # the next report differs

    real_replace = os.replace

    def crash_on_markdown(src, dst):
        if str(dst).endswith("comparison.md"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", crash_on_markdown)
    with pytest.raises(OSError, match="disk full"):
        compare.compare("quora", "sample", EXPECTED, with_figures=False)
    assert (out / "comparison.md").read_bytes() == before  # the old report is intact, not half-written
    assert [p.name for p in out.iterdir() if ".tmp" in p.name] == []  # and no temp file is left behind


def test_no_trained_model_is_a_clear_stage_error(project):
    with pytest.raises(StageError) as err:
        compare.compare("quora", "sample", EXPECTED)
    assert str(err.value) == (f"no trained models in {config.models_dir('quora', 'sample')}: "
                              "run `make train COMP=quora SOURCE=sample` first")


def test_cli_main_writes_the_report_and_prints_the_table(quora_models, monkeypatch, capsys, restore_logging):
    from pipelines.__main__ import main

    monkeypatch.setattr(compare, "expected_models", lambda comp: EXPECTED)
    assert main(["compare", "--comp", "quora", "--source", "sample"]) == 0
    stdout = capsys.readouterr().out
    lines = stdout.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("#"))
    assert "OOF log loss" in header and "AUC" in header and "status" in header
    table = lines[lines.index(header) + 2: lines.index(header) + 8]
    assert [line.split()[1] for line in table] == [r["model"].split()[0] for r in
                                                   read_json(config.reports_dir("quora", "sample") /
                                                             "comparison.json")["rows"]]
    assert "make train COMP=quora SOURCE=sample MODEL=lstm" in stdout
    out = config.reports_dir("quora", "sample")
    for name in ("comparison.md", "comparison.json", "scores.png", "roc.png"):
        assert (out / name).stat().st_size > 0

    # --strict fails the command while something needs attention (lstm is missing)
    assert main(["compare", "--comp", "quora", "--source", "sample", "--strict", "--no-figures"]) == 1


def test_cli_main_without_models_prints_one_line_and_fails(project, monkeypatch, capsys, restore_logging):
    from pipelines.__main__ import main

    monkeypatch.setattr(compare, "expected_models", lambda comp: EXPECTED)
    assert main(["compare", "--comp", "cervix", "--source", "sample"]) == EXIT_STAGE_ERROR
    err = capsys.readouterr().err
    assert "no trained models in" in err and "run `make train COMP=cervix SOURCE=sample` first" in err
    assert "Traceback" not in err


def test_params_summary_and_blend_members():
    assert compare.params_summary({"model": "m", "params": {"C": 0.1, "features": list("abcdefgh"),
                                                            "opt": {"lr": 1e-3}, "calibration": None},
                                   "seed": 1}) == "C=0.1, features=[8 items], opt.lr=0.001"
    # the parameters that tell models apart come first, whatever their names sort like
    assert compare.params_summary({"params": {"bagging_fraction": 0.8, "num_leaves": 31, "learning_rate": 0.02}}) \
        == "learning_rate=0.02, num_leaves=31, bagging_fraction=0.8"
    long = compare.params_summary({"params": {f"p{i}": i for i in range(40)}})
    assert len(long) <= compare.PARAMS_WIDTH and long.endswith("...")
    assert compare.blend_members({"params": {"weights": {"a": 0.7, "b": 0.3}}}) == {"a": 0.7, "b": 0.3}
    assert compare.blend_members({"params": {"models": ["a", "b"], "weights": [0.5, 0.5]}}) == {"a": 0.5, "b": 0.5}
    assert compare.blend_members({"models": ["a", "b"]}) == {"a": None, "b": None}
    assert compare.blend_members({"params": {"C": 1}}) == {}


def test_differing_library_versions_are_shown(quora_models):
    run_path = config.model_dir("quora", "sample", "weak") / "run.json"
    record = read_json(run_path)
    record["versions"]["numpy"] = "1.0.0"
    write_json(run_path, record)
    report = compare.compare("quora", "sample", EXPECTED, with_figures=False)
    line = next(v for v in compare.versions_lines(report["versions"]) if v.startswith("numpy"))
    assert line == f"numpy DIFFERS between runs: 1.0.0 (weak); {np.__version__} (blend, nn, strong)"
    assert json.loads((config.reports_dir("quora", "sample") / "comparison.json").read_text())["versions"]["numpy"] \
        == {"1.0.0": ["weak"], np.__version__: ["blend", "nn", "strong"]}


def test_reads_the_real_blend_stage_output(quora_models, monkeypatch, capsys, restore_logging):
    """The blend written by the blend stage itself (when that module is present) is parsed: its weights
    summarised, its models checked for re-training after it."""
    pytest.importorskip("pipelines.common.blend")
    from pipelines.__main__ import main

    assert main(["blend", "--comp", "quora", "--source", "sample", "--no-submission", "--method", "weights"]) == 0
    params = read_json(config.model_dir("quora", "sample", "blend") / "params.json")
    members = compare.blend_members(params)
    assert set(members) == {"strong", "weak", "nn"} and sum(members.values()) == pytest.approx(1.0)
    blend = rows_by_model(compare.compare("quora", "sample", EXPECTED, with_figures=False))["blend"]
    assert blend["params"].startswith("weights: ") and not blend["stale"], blend["stale_reasons"]
    assert blend["log_loss"] == read_json(config.model_dir("quora", "sample", "blend") / "metrics.json")["log_loss"]

    finished = read_json(config.model_dir("quora", "sample", "blend") / "run.json")["finished"]
    set_finished(config.model_dir("quora", "sample", "weak"),
                 (dt.datetime.fromisoformat(finished) + dt.timedelta(minutes=5)).isoformat())
    blend = rows_by_model(compare.compare("quora", "sample", EXPECTED, with_figures=False))["blend"]
    assert blend["stale"] and "re-trained after the blend" in blend["stale_reasons"][0]


def test_changed_inputs_summarises_many_files(project):
    files = [project / "features" / f"f{i}.npy" for i in range(6)]
    for f in files:
        f.parent.mkdir(exist_ok=True)
        f.write_text("v1")
    inputs = input_fingerprints(files + [project / "features" / "later.npy"])
    assert compare.changed_inputs(inputs) == []
    for f in files[:5]:
        f.write_text("v2")
    files[5].unlink()
    (project / "features" / "later.npy").write_text("new")
    assert compare.changed_inputs(inputs) == [
        "inputs features/f0.npy, features/f1.npy, features/f2.npy (+2 more) changed since training",
        "input features/f5.npy no longer exists",
        "input features/later.npy did not exist at training time",
    ]
