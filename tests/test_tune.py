"""The tune stage (issue 13, tuning): Optuna over a model's declared search space, on the tiny tabular competition
(tests/tabular_comp: a logistic regression, 3 folds, well under a second a trial)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import optuna
import pytest

from pipelines import competitions, config
from pipelines.__main__ import EXIT_STAGE_ERROR, base_parser, main
from pipelines.common import tune
from pipelines.common.log import StageError

ROOT = Path(__file__).resolve().parent.parent
DIRS = ("DATA_DIR", "MODELS_DIR", "SUBMISSIONS_DIR", "REPORTS_DIR", "LOCKS_DIR")


@pytest.fixture
def tabular(project_dirs, tmp_path):
    """The tabular competition's data and features, in tmp_path's project folders; its --source."""
    from tabular_comp import write_raw

    competitions.register("tabular", "tabular_comp.competition")
    src = write_raw(tmp_path / "tabular-download")
    for stage in ("data", "features"):
        assert main([stage, "--comp", "tabular", "--source", str(src)]) == 0
    yield str(src)
    competitions.unregister("tabular")


def tune_args(src: str, *argv: str, comp: str = "tabular"):
    parser = base_parser(add_help=False)
    tune.add_arguments(parser, comp)
    return parser.parse_args(["tune", "--comp", comp, "--source", src, *argv])


def run_tune(src: str, *argv: str) -> dict:
    return tune.tune(tune_args(src, "--model", "logistic", *argv))


def load(src: str, study: str = "logistic") -> optuna.Study:
    return optuna.load_study(study_name=study, storage=tune.default_storage("tabular", src, study, "logistic"))


def finished(study: optuna.Study) -> list:
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def test_a_fixed_seed_picks_the_same_best_trial_twice_and_the_best_becomes_a_run(tabular):
    src = tabular
    first = run_tune(src, "--trials", "3", "--study", "a")
    second = run_tune(src, "--trials", "3", "--study", "b")
    assert first["n_trials"] == second["n_trials"] == 3
    assert (first["best_trial"], first["best_params"], first["best_value"]) == \
        (second["best_trial"], second["best_params"], second["best_value"])
    assert [t.params for t in load(src, "a").trials] == [t.params for t in load(src, "b").trials]
    other = run_tune(src, "--trials", "3", "--study", "c", "--seed", "7")
    assert [t.params for t in load(src, "c").trials] != [t.params for t in load(src, "a").trials]
    assert other["n_trials"] == 3

    # every complete trial reported each fold's log loss as an intermediate value
    for t in load(src, "a").trials:
        assert sorted(t.intermediate_values) == [0, 1, 2]

    # the best trial is an ordinary run that blend and compare see; the trials are not
    from pipelines.common.blend import finished_runs
    from pipelines.common.compare_runs import load_runs

    models = config.models_dir("tabular", src)
    runs = finished_runs(models)
    assert {"logistic/tuned-a", "logistic/tuned-b", "logistic/tuned-c"} <= set(runs)
    assert not [r for r in runs if "/." in r or r.startswith(".") or r.split("/")[-1][1:].isdigit()]
    assert {r.name for r in load_runs(models, "tabular", src)[0]} == set(runs)
    best = models / "logistic" / "tuned-a"
    assert (best / "oof.parquet").is_file() and (best / "test.parquet").is_file()
    record = json.loads((best / "tune.json").read_text(encoding="utf-8"))
    assert record["study"] == "a" and record["n_trials"] == 3 and record["best_trial"] == first["best_trial"]
    assert record["best_params"] == first["best_params"] and record["best_value"] == first["best_value"]
    params = json.loads((best / "params.json").read_text(encoding="utf-8"))["params"]
    assert params["C"] == pytest.approx(first["best_params"]["C"])
    metrics = json.loads((best / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["log_loss"] == pytest.approx(first["best_value"])  # retrained: the same folds, the same seed
    trials = models / "logistic" / tune.TUNE_DIR / "a"
    assert sorted(p.name for p in trials.iterdir()) == ["t0", "t1", "t2"]
    assert all((trials / f"t{n}" / "oof.parquet").is_file() for n in range(3))

    # pictures: optimisation history and parameter importances
    reports = config.reports_dir("tabular", src)
    for kind in ("history", "importance"):
        png = reports / f"tune_a_{kind}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_study_resumes_and_adds_trials_up_to_the_new_total(tabular):
    src = tabular
    run_tune(src, "--trials", "2")
    first = [(t.number, t.params, t.value) for t in load(src).trials]
    summary = run_tune(src, "--trials", "4")
    study = load(src)
    assert len(finished(study)) == summary["n_trials"] == 4
    assert [(t.number, t.params, t.value) for t in study.trials[:2]] == first
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    again = run_tune(src, "--trials", "4")  # nothing left to do but the (up to date) tuned run
    assert len(load(src).trials) == 4 and again["best_trial"] == summary["best_trial"]


DRIVER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from pipelines import competitions, config
from pipelines.common import tune
for name, path in {dirs!r}.items():
    setattr(config, name, Path(path))
competitions.register("tabular", "tabular_comp.competition")
run_trial = tune.run_trial
def slow_trial(*args, **kwargs):  # long enough that both workers are running before the study is done
    time.sleep(0.4)
    return run_trial(*args, **kwargs)
tune.run_trial = slow_trial
from pipelines.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_workers_on_one_sqlite_study_finish_n_trials_together(tabular, tmp_path):
    src = tabular
    driver = tmp_path / "worker.py"
    driver.write_text(textwrap.dedent(DRIVER.format(
        tests=str(ROOT / "tests"), dirs={n: str(getattr(config, n)) for n in DIRS})), encoding="utf-8")
    argv = [sys.executable, str(driver), "tune", "--comp", "tabular", "--source", src, "--model", "logistic",
            "--trials", "6"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    outs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(outs)
    study = load(src)
    done = finished(study)
    assert len(done) == 6 and len(study.trials) == 6  # exactly N, none surplus or failed
    assert sorted(t.number for t in done) == list(range(6))
    assert len({tuple(sorted(t.params.items())) for t in done}) == 6  # no parameter set twice
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both workers ran trials
    assert (config.models_dir("tabular", src) / "logistic" / "tuned-logistic" / "tune.json").is_file()


def test_a_trial_whose_worker_died_is_marked_failed_and_not_counted(tabular):
    src = tabular
    run_tune(src, "--trials", "1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = load(src)
    orphan = study.ask()  # a worker killed in its trial leaves it RUNNING
    orphan.set_user_attr("worker", f"{tune.socket.gethostname()}:{dead.pid}")
    run_tune(src, "--trials", "3")
    study = load(src)
    assert study.trials[orphan.number].state == optuna.trial.TrialState.FAIL
    assert len(finished(study)) == 3


def test_a_trial_without_a_heartbeat_on_a_database_storage_is_marked_failed(tabular, monkeypatch):
    """A worker killed on another machine: its trial's heartbeat stops; the next worker fails it."""
    src = tabular
    monkeypatch.setattr(tune, "HEARTBEAT_S", 1)
    monkeypatch.setattr(tune, "HEARTBEAT_GRACE_S", 1)
    run_tune(src, "--trials", "1")
    storage = tune.open_storage(tune.default_storage("tabular", src, "logistic", "logistic"))
    study = optuna.load_study(study_name="logistic", storage=storage)
    with warnings.catch_warnings():  # Optuna: "heartbeats are meant for optimize()"
        warnings.simplefilter("ignore")
        orphan = study.ask()
    orphan.set_user_attr("worker", "another-machine:1")
    storage.record_heartbeat(orphan._trial_id)
    time.sleep(2.5)
    run_tune(src, "--trials", "2")
    study = load(src)
    assert study.trials[orphan.number].state == optuna.trial.TrialState.FAIL
    assert len(finished(study)) == 2


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_a_pruned_trial_stops_after_its_first_fold(tabular, monkeypatch, caplog):
    src = tabular
    monkeypatch.setattr(tune, "pruner", lambda n_trials: AlwaysPrune())
    summary = run_tune(src, "--trials", "2")
    study = load(src)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [0] for t in study.trials)
    trial_dir = config.models_dir("tabular", src) / "logistic" / tune.TUNE_DIR / "logistic" / "t0"
    assert sorted(p.name for p in (trial_dir / "folds").glob("fold_*.npz")) == ["fold_0.npz"]
    assert not (trial_dir / "metrics.json").exists()
    # no complete trial: no tuned run, and the pruned trials count towards --trials
    assert summary["n_pruned"] == 2 and summary["best_trial"] is None
    assert not (config.models_dir("tabular", src) / "logistic" / "tuned-logistic").exists()


def test_fixed_options_are_not_searched_and_the_best_run_can_be_named(tabular):
    src = tabular
    with pytest.raises(StageError, match="fixes every option"):
        run_tune(src, "--trials", "1", "--logistic-C", "0.5")
    summary = run_tune(src, "--trials", "1", "--run", "logistic-best")
    assert (config.models_dir("tabular", src) / "logistic" / "logistic-best" / "tune.json").is_file()
    assert summary["final"]["run"] == "logistic/logistic-best"


@pytest.mark.parametrize("argv, message", [
    (["--model", "all"], "tune one model"),
    (["--model", "logistic", "--trials", "0"], "--trials 0: give 1 or more"),
    (["--model", "logistic", "--storage", "postgresql://me:secret@127.0.0.1:9/none"],
     r"--storage postgresql://me:\*\*\*@127.0.0.1:9/none: Optuna cannot open it"),
    (["--model", "logistic", "--storage", "nosuchdb://x/y"], "--storage nosuchdb://x/y: Optuna cannot open it"),
    (["--model", "logistic", "--storage", "journal:/no/such/folder/study.log"], "/no/such/folder does not exist"),
])
def test_clear_errors(tabular, argv, message):
    with pytest.raises(StageError, match=message) as err:
        tune.tune(tune_args(tabular, *argv))
    assert "\n" not in str(err.value) and "secret" not in str(err.value)


def test_an_unknown_model_or_no_model_is_one_clear_line(tabular, capsys):
    with pytest.raises(SystemExit) as usage:  # the command line lists the competition's models
        main(["tune", "--comp", "tabular", "--source", tabular, "--model", "nope"])
    assert usage.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(StageError, match="unknown tabular model 'nope'; use one of: logistic"):
        tune.model_space(competitions.get("tabular"), "nope", tune_args(tabular))
    assert main(["tune", "--comp", "tabular", "--source", tabular]) == EXIT_STAGE_ERROR  # --model all, the default


def test_a_journal_file_storage_holds_a_study(tabular, tmp_path):
    journal = tmp_path / "shared" / "study.log"
    journal.parent.mkdir()
    summary = run_tune(tabular, "--trials", "2", "--storage", f"journal:{journal}")
    assert summary["n_trials"] == 2 and journal.stat().st_size > 0
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(study_name="logistic", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert len(finished(study)) == 2


# Every model the issue names has a search space that Optuna takes; a model without one is one clear line.
TUNED = {"quora": ["lgbm", "bow_lr", "bow_svm", "siamese_lstm", "siamese_gru"],
         "cervix": ["small_cnn", "bow_svm", "mobilenet"]}


@pytest.mark.parametrize("comp, model", [(c, m) for c, ms in TUNED.items() for m in ms])
def test_the_named_models_declare_a_search_space(comp, model):
    spec, dists = tune.model_space(competitions.get(comp), model, tune_args("sample", comp=comp))
    assert dists and spec.name == model
    defaults = spec.options()
    for name, dist in dists.items():  # the space is over real fields; the default lies inside it
        value = getattr(defaults, name)
        if value is not None and isinstance(dist, optuna.distributions.CategoricalDistribution):
            assert value in dist.choices, (model, name)
        elif value is not None:
            assert dist.low <= value <= dist.high, (model, name)


def test_a_model_without_a_search_space_is_one_clear_line():
    comp = competitions.get("cervix")
    if not [s for s in comp.models.specs() if not tune.search_space(s.options)]:
        pytest.skip("every cervix model declares a search space")
    name = next(s.name for s in comp.models.specs() if not tune.search_space(s.options))
    with pytest.raises(StageError, match=f"{name} declares no search space"):
        tune.model_space(comp, name, tune_args("sample", comp="cervix"))


def test_a_quora_model_tunes_through_its_own_options(project_dirs):
    """lgbm on the Quora fake features: its search space's values reach the run (params.json), with a fixed
    option from the command line (few boosting rounds)."""
    from quora_model_helpers import write_fake_features

    write_fake_features(config.features_dir("quora", "sample"), n_train=240, n_test=40, n_folds=2)
    summary = tune.tune(tune_args("sample", "--model", "lgbm", "--trials", "2", "--lgbm-rounds", "20",
                                  "--lgbm-bow-columns", "0", comp="quora"))
    assert summary["n_trials"] == 2 and set(summary["best_params"]) == {
        "learning_rate", "num_leaves", "min_data_in_leaf", "feature_fraction"}
    run = config.models_dir("quora", "sample") / "lgbm" / "tuned-lgbm"
    params = json.loads((run / "params.json").read_text(encoding="utf-8"))["params"]
    assert params["num_leaves"] == summary["best_params"]["num_leaves"] and params["num_boost_round"] == 20


def test_a_study_of_the_earlier_layout_moves_beside_the_models_runs_and_resumes(tabular):
    src = tabular
    assert run_tune(src, "--trials", "2", "--study", "old")["n_trials"] == 2
    models = config.models_dir("tabular", src)
    (models / tune.TUNE_DIR).mkdir(exist_ok=True)
    for name in ("old.db", "old"):  # where the study lived before: models/<comp>/<source>/.tune/
        (models / "logistic" / tune.TUNE_DIR / name).rename(models / tune.TUNE_DIR / name)
    summary = run_tune(src, "--trials", "3", "--study", "old")
    assert (summary["n_trials"], summary["n_complete"] + summary["n_pruned"]) == (3, 3)  # resumed: one more trial
    assert (models / "logistic" / tune.TUNE_DIR / "old.db").exists() and not (models / tune.TUNE_DIR / "old.db").exists()
