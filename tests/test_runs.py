"""Issue 13 (part): runs named with --run sit side by side and blend; --seeds trains a run per seed and a bagged
run averaging them, scored like any run."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipelines import config
from pipelines.__main__ import EXIT_STAGE_ERROR, main
from quora_model_helpers import write_fake_features

LGBM = ["--model", "lgbm", "--lgbm-rounds", "15", "--lgbm-early-stopping", "0", "--lgbm-bow-columns", "0"]


@pytest.fixture
def features(project_dirs):
    return write_fake_features(config.features_dir("quora", "sample"))


def _train(*argv: str) -> int:
    return main(["train", "--comp", "quora", "--source", "sample", *argv])


def test_two_named_runs_of_one_model_sit_side_by_side_and_both_blend(features):
    assert _train("--model", "bow_lr", "--run", "bow_lr-c1", "--bow-C", "1") == 0
    assert _train("--model", "bow_lr", "--run", "bow_lr-c003", "--bow-C", "0.03") == 0
    params = {r: json.loads((config.model_dir("quora", "sample", r) / "params.json").read_text())["params"]["C"]
              for r in ("bow_lr-c1", "bow_lr-c003")}
    assert params == {"bow_lr-c1": 1.0, "bow_lr-c003": 0.03}
    a, b = (pd.read_parquet(config.model_dir("quora", "sample", r) / "oof.parquet") for r in params)
    assert not np.allclose(a["is_duplicate"], b["is_duplicate"])
    assert main(["blend", "--comp", "quora", "--source", "sample", "--runs", "bow_lr-*", "--no-submission"]) == 0
    blended = json.loads((config.model_dir("quora", "sample", "blend") / "params.json").read_text())["params"]
    assert blended["models"] == ["bow_lr-c003", "bow_lr-c1"]
    # compare groups the runs by model and says what differs between them
    assert main(["compare", "--comp", "quora", "--source", "sample"]) == 0
    report = json.loads((config.reports_dir("quora", "sample") / "comparison.json").read_text())
    (group,) = [g for g in report["groups"] if g["model"] == "bow_lr"]
    assert group["differing"] == ["C"] and {r["run"] for r in group["runs"]} == {"bow_lr-c1", "bow_lr-c003"}
    assert "## Runs by model" in (config.reports_dir("quora", "sample") / "comparison.md").read_text()


def test_a_run_name_is_a_plain_folder_name(features, capsys):
    assert _train("--model", "bow_lr", "--run", "../elsewhere") == EXIT_STAGE_ERROR
    assert _train("--model", "all", "--run", "x") == EXIT_STAGE_ERROR


def test_seeds_train_a_run_each_and_a_bag_that_averages_them(features):
    assert _train(*LGBM, "--seeds", "1,2,3") == 0
    runs = {s: config.model_dir("quora", "sample", f"lgbm-seed{s}") for s in (1, 2, 3)}
    oofs = [pd.read_parquet(d / "oof.parquet") for d in runs.values()]
    assert [json.loads((d / "params.json").read_text())["seed"] for d in runs.values()] == [1, 2, 3]
    assert not np.allclose(oofs[0]["is_duplicate"], oofs[1]["is_duplicate"])  # the seed matters
    bag = config.model_dir("quora", "sample", "lgbm-bag3")
    bagged = pd.read_parquet(bag / "oof.parquet")
    np.testing.assert_allclose(bagged["is_duplicate"], np.mean([o["is_duplicate"] for o in oofs], axis=0))
    pd.testing.assert_frame_equal(bagged[["id", "fold", "target"]], oofs[0][["id", "fold", "target"]],
                                  check_dtype=False)
    tests = [pd.read_parquet(d / "test.parquet")["is_duplicate"] for d in runs.values()]
    np.testing.assert_allclose(pd.read_parquet(bag / "test.parquet")["is_duplicate"], np.mean(tests, axis=0))
    metrics = json.loads((bag / "metrics.json").read_text())
    assert set(metrics["members"]) == {"lgbm-seed1", "lgbm-seed2", "lgbm-seed3"} and len(metrics["folds"]) == 3
    from sklearn.metrics import log_loss

    assert metrics["log_loss"] == pytest.approx(log_loss(bagged["target"], bagged["is_duplicate"]))
    # nothing changed: the same command rewrites nothing
    before = (bag / "oof.parquet").stat().st_mtime_ns
    assert _train(*LGBM, "--seeds", "1,2,3") == 0
    assert (bag / "oof.parquet").stat().st_mtime_ns == before


def test_seeds_must_be_two_or_more_integers(features):
    assert _train(*LGBM, "--seeds", "1") == EXIT_STAGE_ERROR
    assert _train(*LGBM, "--seeds", "1,x") == EXIT_STAGE_ERROR


def test_the_command_that_remakes_a_run_names_its_model_options_and_seeds(features):
    from pipelines.common.compare_runs import train_command

    assert _train("--model", "bow_lr", "--run", "bow_lr-c003", "--bow-C", "0.03", "--bow-word-only") == 0
    assert _train(*LGBM, "--seeds", "1,2") == 0
    assert train_command("quora", "sample", "bow_lr") == "make train COMP=quora SOURCE=sample MODEL=bow_lr"
    assert train_command("quora", "sample", "bow_lr-c003") == (
        "make train COMP=quora SOURCE=sample MODEL=bow_lr RUN=bow_lr-c003 ARGS='--bow-C 0.03 --bow-word-only'")
    assert train_command("quora", "sample", "lgbm-seed2") == (
        "make train COMP=quora SOURCE=sample MODEL=lgbm RUN=lgbm-seed2 ARGS='--lgbm-rounds 15 "
        "--lgbm-early-stopping 0 --lgbm-bow-columns 0 --seed 2'")
    assert train_command("quora", "sample", "lgbm-bag2") == (
        "make train COMP=quora SOURCE=sample MODEL=lgbm SEEDS=1,2 ARGS='--lgbm-rounds 15 --lgbm-early-stopping 0 "
        "--lgbm-bow-columns 0'")
