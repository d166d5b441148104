"""Issue 12: the competition contract is real. A third, tiny competition (tests/tabular_comp: a tabular binary
task whose prediction column is called ``target``) is one package plus one registry line, and runs every
stage from data to a validated submission with no edit to pipelines/common/. The shared stages name no
competition; the train stage is a Stage; each option default exists once."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from pipelines import competitions, config
from pipelines.__main__ import EXIT_STAGE_ERROR, main
from pipelines.common import runs

from run_helpers import default_run, run_of

COMMON = Path(__file__).resolve().parent.parent / "pipelines" / "common"


@pytest.fixture
def tabular(project_dirs, tmp_path):
    from tabular_comp import write_raw

    competitions.register("tabular", "tabular_comp.competition")
    yield write_raw(tmp_path / "tabular-download")
    competitions.unregister("tabular")


def test_a_third_competition_runs_every_stage_with_a_prediction_column_called_target(tabular):
    src = tabular
    for stage in ("data", "features"):
        assert main([stage, "--comp", "tabular", "--source", src]) == 0
    assert main(["train", "--comp", "tabular", "--source", src, "--model", "all", "--logistic-C", "0.5"]) == 0
    run = run_of("tabular", src, "logistic")
    assert run.name.startswith("C=0.5-")
    oof = pd.read_parquet(run / "oof.parquet")
    # the label column moves aside for the prediction column `target` (it crashed finish_cv before)
    assert list(oof.columns) == ["id", "fold", "target_label", "target"]
    assert oof["target"].between(0, 1).all() and set(oof["target_label"]) == {0, 1}
    assert pd.read_json(run / "params.json", typ="series")["params"]["C"] == 0.5

    assert main(["blend", "--comp", "tabular", "--source", src, "--name", "tab"]) == 0
    csv = config.submissions_dir("tabular") / "tab.csv"
    sub = pd.read_csv(csv)
    assert list(sub.columns) == ["id", "target"] and len(sub) == 60
    from pipelines.common.submission import validate_submission_file

    validate_submission_file("tabular", csv, src)  # raises on an invalid file
    assert main(["compare", "--comp", "tabular", "--source", src]) == 0
    assert (config.reports_dir("tabular", src)).is_dir()


def test_train_is_a_stage_nothing_changed_nothing_rewritten(tabular):
    src = tabular
    for stage in ("data", "features", "train"):
        assert main([stage, "--comp", "tabular", "--source", src]) == 0
    run = default_run("tabular", src, "logistic")
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    assert main(["train", "--comp", "tabular", "--source", src]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()} == before
    # a changed option trains another run beside it, the default run left as it was
    assert main(["train", "--comp", "tabular", "--source", src, "--logistic-C", "2"]) == 0
    found = runs.runs_of("tabular", src, "logistic")
    assert len(found) == 2 and f"logistic/{run.name}" in found
    (other,) = [p for p in found.values() if p != run]
    assert other.name.startswith("C=2-") and (other / "oof.parquet").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()} == before


def test_a_competition_without_a_sample_says_so(tabular):
    assert main(["data", "--comp", "tabular", "--source", "sample"]) == EXIT_STAGE_ERROR


def test_the_help_of_a_stage_lists_only_the_given_competitions_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--comp", "quora", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "--lgbm-learning-rate" in out and "--n-words" not in out
    with pytest.raises(SystemExit):
        main(["train", "--comp", "cervix", "--help"])
    out = capsys.readouterr().out
    assert "--n-words" in out and "--lgbm-learning-rate" not in out and "--unfreeze" in out


def test_common_names_no_competition():
    """pipelines/common/ imports no competition and branches on no competition's name."""
    offenders = []
    for path in sorted(COMMON.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for n, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"pipelines\.(quora|cervix)\b|[\"'](quora|cervix)[\"']", code):
                offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_each_default_exists_once_in_the_options():
    """The train stage's defaults come from the options dataclasses: the help shows them, the parsed
    command line leaves them unset (None) and the resolved options carry them."""
    from pipelines.common import train
    from pipelines.cervix.models.cnn import NetOptions
    from pipelines.quora.models.siamese import SiameseOptions

    args = train.parse_args("quora", ["--model", "siamese_gru"])
    assert args.units is None  # not set by argparse: the dataclass is the one default
    quora = competitions.get("quora")
    ctx = train.run_context(args, quora)
    _, options = train.model_options(quora, "siamese_gru", args, ctx)
    assert options.units == SiameseOptions().units and options.epochs == 6  # the sample's profile
    _, options = train.model_options(quora, "siamese_gru", train.parse_args("quora", ["--source", "kaggle"]),
                                     train.run_context(train.parse_args("quora", ["--source", "kaggle"]), quora))
    assert options.epochs == SiameseOptions().epochs
    cervix = competitions.get("cervix")
    kaggle = train.parse_args("cervix", ["--source", "kaggle"])
    for name, epochs, lr in (("small_cnn", 25, NetOptions().lr), ("vgg16", 20, 1e-4), ("mobilenet_v2", 15, 1e-3)):
        _, options = train.model_options(cervix, name, kaggle, train.run_context(kaggle, cervix))
        assert (options.epochs, options.lr) == (epochs, lr)
    _, options = train.model_options(cervix, "bow_svm", train.parse_args("cervix", ["--n-words", "16"]),
                                     train.run_context(kaggle, cervix))
    assert options.n_words == 16
