"""Issue 13: runs of one model sit side by side (models/<comp>/<source>/<model>/<run>/) and blend; --seeds trains a
run per seed and a bagged run averaging them, scored like any run."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipelines import config
from pipelines.__main__ import EXIT_STAGE_ERROR, main
from pipelines.common import runs
from quora_model_helpers import write_fake_features

LGBM = ["--model", "lgbm", "--lgbm-rounds", "15", "--lgbm-early-stopping", "0", "--lgbm-bow-columns", "0"]


@pytest.fixture
def features(project_dirs):
    return write_fake_features(config.features_dir("quora", "sample"))


def _train(*argv: str) -> int:
    return main(["train", "--comp", "quora", "--source", "sample", *argv])


def _dir(key: str):
    return runs.run_dir("quora", "sample", key)


def test_two_named_runs_of_one_model_sit_side_by_side_and_both_blend(features):
    assert _train("--model", "bow_lr", "--run", "c1", "--bow-C", "1") == 0
    assert _train("--model", "bow_lr", "--run", "c003", "--bow-C", "0.03") == 0
    params = {r: json.loads((_dir(r) / "params.json").read_text())["params"]["C"] for r in ("bow_lr/c1", "bow_lr/c003")}
    assert params == {"bow_lr/c1": 1.0, "bow_lr/c003": 0.03}
    a, b = (pd.read_parquet(_dir(r) / "oof.parquet") for r in params)
    assert not np.allclose(a["is_duplicate"], b["is_duplicate"])
    assert main(["blend", "--comp", "quora", "--source", "sample", "--runs", "bow_lr/*", "--no-submission"]) == 0
    blended = json.loads((config.model_dir("quora", "sample", "blend") / "params.json").read_text())["params"]
    assert blended["models"] == ["bow_lr/c003", "bow_lr/c1"]
    # compare groups the runs by model and says what differs between them
    assert main(["compare", "--comp", "quora", "--source", "sample"]) == 0
    report = json.loads((config.reports_dir("quora", "sample") / "comparison.json").read_text())
    (group,) = [g for g in report["groups"] if g["model"] == "bow_lr"]
    assert group["differing"] == ["C"] and {r["run"] for r in group["runs"]} == {"bow_lr/c1", "bow_lr/c003"}
    assert "## Runs by model" in (config.reports_dir("quora", "sample") / "comparison.md").read_text()


def test_a_run_name_is_a_plain_folder_name(features, capsys):
    assert _train("--model", "bow_lr", "--run", "../elsewhere") == EXIT_STAGE_ERROR
    assert _train("--model", "all", "--run", "x") == EXIT_STAGE_ERROR


def test_seeds_train_a_run_each_and_a_bag_that_averages_them(features):
    assert _train(*LGBM, "--seeds", "1,2,3") == 0
    found = runs.runs_of("quora", "sample", "lgbm")
    members = {k: d for k, d in found.items() if "/bag-" not in k}
    (bag,) = [d for k, d in found.items() if "/bag-" in k]
    assert sorted(members) == sorted(f"lgbm/{n}" for n in (
        runs.default_run_name(json.loads((d / runs.IDENTITY).read_text()), _lgbm_defaults()) for d in members.values()))
    assert bag.name.startswith("bag-seeds=1.2.3+")
    oofs = [pd.read_parquet(d / "oof.parquet") for d in members.values()]
    assert sorted(json.loads((d / "params.json").read_text())["seed"] for d in members.values()) == [1, 2, 3]
    assert not np.allclose(oofs[0]["is_duplicate"], oofs[1]["is_duplicate"])  # the seed matters
    bagged = pd.read_parquet(bag / "oof.parquet")
    np.testing.assert_allclose(bagged["is_duplicate"], np.mean([o["is_duplicate"] for o in oofs], axis=0))
    pd.testing.assert_frame_equal(bagged[["id", "fold", "target"]], oofs[0][["id", "fold", "target"]],
                                  check_dtype=False)
    tests = [pd.read_parquet(d / "test.parquet")["is_duplicate"] for d in members.values()]
    np.testing.assert_allclose(pd.read_parquet(bag / "test.parquet")["is_duplicate"], np.mean(tests, axis=0))
    metrics = json.loads((bag / "metrics.json").read_text())
    assert set(metrics["members"]) == set(members) and len(metrics["folds"]) == 3
    from sklearn.metrics import log_loss

    assert metrics["log_loss"] == pytest.approx(log_loss(bagged["target"], bagged["is_duplicate"]))
    # nothing changed: the same command rewrites nothing
    before = (bag / "oof.parquet").stat().st_mtime_ns
    assert _train(*LGBM, "--seeds", "1,2,3") == 0
    assert (bag / "oof.parquet").stat().st_mtime_ns == before


def _lgbm_defaults() -> dict:
    from pipelines import competitions
    from pipelines.common.models import resolve_options

    comp = competitions.get("quora")
    return runs.identity("lgbm", resolve_options(comp.models["lgbm"], {}, comp.profile("sample", "lgbm")), config.SEED)


def test_named_seeds_are_name_seed_and_name_bag(features):
    assert _train(*LGBM, "--run", "fast", "--seeds", "1,2") == 0
    assert set(runs.runs_of("quora", "sample", "lgbm")) == {"lgbm/fast-seed1", "lgbm/fast-seed2", "lgbm/fast-bag2"}


def test_seeds_must_be_two_or_more_integers(features):
    assert _train(*LGBM, "--seeds", "1") == EXIT_STAGE_ERROR
    assert _train(*LGBM, "--seeds", "1,x") == EXIT_STAGE_ERROR


def test_the_command_that_remakes_a_run_names_its_model_options_and_seeds(features):
    from pipelines.common.compare_runs import train_command

    assert _train("--model", "bow_lr", "--run", "c003", "--bow-C", "0.03", "--bow-word-only") == 0
    assert _train("--model", "bow_lr", "--bow-C", "0.3") == 0
    assert _train(*LGBM, "--seeds", "1,2") == 0
    (auto,) = [k for k in runs.runs_of("quora", "sample", "bow_lr") if k != "bow_lr/c003"]
    assert auto.startswith("bow_lr/C=0.3-")
    assert train_command("quora", "sample", "bow_lr") == "make train COMP=quora SOURCE=sample MODEL=bow_lr"
    assert train_command("quora", "sample", auto) == "make train COMP=quora SOURCE=sample MODEL=bow_lr ARGS='--bow-C 0.3'"
    assert train_command("quora", "sample", "bow_lr/c003") == (
        "make train COMP=quora SOURCE=sample MODEL=bow_lr RUN=c003 ARGS='--bow-C 0.03 --bow-word-only'")
    lgbm = runs.runs_of("quora", "sample", "lgbm")
    (seed2,) = [k for k in lgbm if "seed=2" in k]
    (bag,) = [k for k in lgbm if "/bag-" in k]
    flags = "--lgbm-rounds 15 --lgbm-early-stopping 0 --lgbm-bow-columns 0"
    assert train_command("quora", "sample", seed2) == (
        f"make train COMP=quora SOURCE=sample MODEL=lgbm ARGS='{flags} --seed 2'")
    assert train_command("quora", "sample", bag) == (
        f"make train COMP=quora SOURCE=sample MODEL=lgbm SEEDS=1,2 ARGS='{flags}'")


# -- run identity ----------------------------------------------------------------------------------------------

def test_other_options_make_a_run_beside_the_first_and_the_same_options_resume_it(features):
    assert _train("--model", "bow_lr") == 0
    assert _train("--model", "bow_lr", "--bow-C", "0.3") == 0
    found = runs.runs_of("quora", "sample", "bow_lr")
    assert len(found) == 2
    default = next(d for k, d in found.items() if k.startswith("bow_lr/default-"))
    other = next(d for k, d in found.items() if k.startswith("bow_lr/C=0.3-"))
    assert json.loads((other / "params.json").read_text())["params"]["C"] == 0.3
    before = {p: p.stat().st_mtime_ns for p in (default / "oof.parquet", other / "oof.parquet")}
    # the same options again: the same run, up to date, nothing rewritten; nothing deleted either
    assert _train("--model", "bow_lr") == 0
    assert _train("--model", "bow_lr", "--bow-C", "0.3") == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert len(runs.runs_of("quora", "sample", "bow_lr")) == 2
    # another seed is another run too
    assert _train("--model", "bow_lr", "--seed", "7") == 0
    assert any(k.startswith("bow_lr/seed=7-") for k in runs.runs_of("quora", "sample", "bow_lr"))


def test_an_interrupted_run_resumes_in_its_own_folder(features):
    from pipelines.common import train

    args = train.parse_args("quora", ["--source", "sample", "--model", "bow_lr"])

    def stop(k, score):
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.train_model("quora", "bow_lr", args, on_fold=stop)
    (folder,) = runs.runs_of("quora", "sample", "bow_lr").values()
    assert sorted(p.name for p in (folder / "folds").glob("fold_*.npz")) == ["fold_0.npz", "fold_1.npz"]
    # The fold's fitted model, written once after its fit (its checkpoint gets the test predictions later).
    first = (folder / "folds" / "fold_0" / "model.pkl").stat().st_mtime_ns
    assert train.train_model("quora", "bow_lr", args)["complete"]
    assert (folder / "folds" / "fold_0" / "model.pkl").stat().st_mtime_ns == first  # resumed, not refitted
    assert list(runs.runs_of("quora", "sample", "bow_lr").values()) == [folder]


def test_a_named_run_of_other_options_is_refused_unless_replace(features, capsys):
    assert _train("--model", "bow_lr", "--run", "mine", "--bow-C", "1") == 0
    oof = (_dir("bow_lr/mine") / "oof.parquet").read_bytes()
    capsys.readouterr()
    assert _train("--model", "bow_lr", "--run", "mine", "--bow-C", "0.3") == EXIT_STAGE_ERROR
    err = capsys.readouterr().err
    assert "bow_lr/mine holds a run with other options (C 1.0 -> 0.3)" in err and "--replace" in err
    assert (_dir("bow_lr/mine") / "oof.parquet").read_bytes() == oof  # kept
    assert _train("--model", "bow_lr", "--run", "mine", "--bow-C", "0.3", "--replace") == 0
    assert json.loads((_dir("bow_lr/mine") / "params.json").read_text())["params"]["C"] == 0.3


def test_the_run_name_says_what_differs_and_hashes_the_whole_identity():
    base = runs.identity("m", {"a": 1, "b": 0.5, "c": "x"}, 42)
    assert runs.default_run_name(base, base) == f"default-{runs.short_hash(base)}"
    other = runs.identity("m", {"a": 2, "b": 0.5, "c": "y z"}, 43)
    name = runs.default_run_name(other, base)
    assert name.startswith("seed=43+a=2+c=y_z-") and name != runs.default_run_name(runs.identity(
        "m", {"a": 2, "b": 0.5, "c": "y z"}, 44), base)
    long = runs.identity("m", {f"option_{i}": i + 1 for i in range(20)}, 42)
    assert len(runs.default_run_name(long, runs.identity("m", {f"option_{i}": 0 for i in range(20)}, 42))) <= 70
    assert runs.match("lgbm/default-1a2b3c", "lgbm") and runs.match("lgbm/default-1a2b3c", "lgbm/*")
    assert runs.match("siamese_gru/bag-seeds=1.2-abcdef", "siamese_gru/bag-*")
    assert runs.match("lgbm/tuned-lgbm", "tuned-*") and not runs.match("lgbm/default-1a2b3c", "bow_*")


def test_runs_of_the_flat_layout_move_under_their_model_and_stay_up_to_date(features):
    """A project trained before the per-model layout: its default runs get their identity names (train finds
    them up to date), named runs keep their names, seeds' runs and their bag follow, records point to the moves."""
    assert _train("--model", "bow_lr") == 0
    assert _train(*LGBM, "--seeds", "1,2") == 0
    assert _train("--model", "bow_lr", "--run", "named", "--bow-C", "0.5") == 0
    models = config.models_dir("quora", "sample")
    new_keys = sorted(runs.run_folders(models))
    # rebuild the earlier layout from these runs: flat folders, the names of then, no identity files
    flat_names = {}
    for key, folder in runs.run_folders(models).items():
        model, name = runs.split_key(key)
        old = (model if name.startswith("default-") and model == "bow_lr" else
               f"lgbm-bag2" if name.startswith("bag-") else
               f"lgbm-seed{json.loads((folder / 'params.json').read_text())['seed']}" if model == "lgbm" else name)
        flat_names[old] = key
        (folder / runs.IDENTITY).unlink(missing_ok=True)
        folder.rename(models / f"tmp-{old}")
    for model in ("bow_lr", "lgbm"):
        (models / model).rmdir()
    for old in flat_names:
        (models / f"tmp-{old}").rename(models / old)
    bag_params = json.loads((models / "lgbm-bag2" / "params.json").read_text())
    bag_params["params"]["members"] = ["lgbm-seed1", "lgbm-seed2"]
    (models / "lgbm-bag2" / "params.json").write_text(json.dumps(bag_params))
    lock = json.loads((models / "lgbm-bag2" / "bag.lock.json").read_text())
    lock["deps"] = {d.replace(flat_names["lgbm-seed1"], "lgbm-seed1").replace(flat_names["lgbm-seed2"], "lgbm-seed2"): v
                    for d, v in lock["deps"].items()}
    (models / "lgbm-bag2" / "bag.lock.json").write_text(json.dumps(lock))

    moved = runs.migrate_flat_runs("quora", "sample")
    assert moved == flat_names
    assert sorted(runs.run_folders(models)) == new_keys
    assert json.loads((_dir(flat_names["lgbm-bag2"]) / "params.json").read_text())["params"]["members"] == [
        flat_names["lgbm-seed1"], flat_names["lgbm-seed2"]]
    default = _dir(flat_names["bow_lr"])
    before = (default / "oof.parquet").stat().st_mtime_ns
    assert _train("--model", "bow_lr") == 0  # up to date under its new name: nothing rewritten
    assert (default / "oof.parquet").stat().st_mtime_ns == before
    assert main(["blend", "--comp", "quora", "--source", "sample", "--no-submission"]) == 0
    blended = json.loads((config.model_dir("quora", "sample", "blend") / "params.json").read_text())["params"]
    assert blended["models"] == new_keys
