"""Submission files: Quora's prior correction, the validator's rejections, never-overwrite."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines import competitions, config
from pipelines.common import submission as sub
from pipelines.common.io import write_csv
from pipelines.common.log import StageError
from pipelines.common.task import Task
from pipelines.quora import submission as quora_sub
from quora_model_helpers import write_fake_raw

CERVIX_COLUMNS = ["Type_1", "Type_2", "Type_3"]


# ----- Quora prior correction --------------------------------------------------------------------

def test_prior_correction_matches_hand_computed_values():
    # a = 0.165/0.37 = 0.445946, b = 0.835/0.63 = 1.325397; p' = a p / (a p + b (1 - p))
    # p = 0.5: 0.445946 / (0.445946 + 1.325397) = 0.251756
    got = quora_sub.prior_correction(np.array([0.5, 0.9, 0.1]), r_train=0.37, r_test=0.165)
    assert got == pytest.approx([0.251756, 0.751748, 0.036037], abs=1e-6)
    same = quora_sub.prior_correction(np.array([0.2, 0.7]), r_train=0.3, r_test=0.3)
    assert same == pytest.approx([0.2, 0.7])


def _args(**kw):
    base = dict(source="sample", test_positive_rate=0.165, no_prior_correction=False, train_positive_rate=0.37)
    base.update(kw)
    return argparse.Namespace(**base)


def test_quora_to_submission_corrects_clips_and_orders():
    test_pred = pd.DataFrame({"id": np.array([2, 0, 1]), "is_duplicate": [0.5, 1.0, 0.0]})
    df = quora_sub.to_submission(test_pred, _args())
    assert list(df.columns) == ["test_id", "is_duplicate"]
    assert df["test_id"].tolist() == [0, 1, 2]
    assert df["is_duplicate"].tolist() == pytest.approx([1 - 1e-15, 1e-15, 0.251756], abs=1e-6)
    for off in (_args(no_prior_correction=True), _args(test_positive_rate=0.0)):
        assert quora_sub.to_submission(test_pred, off)["is_duplicate"].iloc[2] == 0.5


def test_quora_train_rate_comes_from_the_labels(project_dirs):
    from pipelines.common.io import save_npy

    save_npy(config.features_dir("quora", "sample") / "labels.npy", np.array([1, 0, 0, 0], dtype=np.int8))
    df = quora_sub.to_submission(pd.DataFrame({"id": [0], "is_duplicate": [0.25]}),
                                 _args(train_positive_rate=None, test_positive_rate=0.5))
    assert df["is_duplicate"].iloc[0] == pytest.approx(0.5)  # 0.25 at a train rate of 0.25 is 0.5 at 0.5
    with pytest.raises(StageError, match="positive rates"):
        quora_sub.to_submission(pd.DataFrame({"id": [0], "is_duplicate": [0.25]}), _args(test_positive_rate=1.5))


def test_quora_options_parse():
    parser = argparse.ArgumentParser()
    quora_sub.add_arguments(parser)
    args = parser.parse_args(["--test-positive-rate", "0.2", "--no-prior-correction"])
    assert args.test_positive_rate == 0.2 and args.no_prior_correction and args.train_positive_rate is None


# ----- the validator -----------------------------------------------------------------------------

def quora_frame(n=6):
    return pd.DataFrame({"test_id": np.arange(n), "is_duplicate": np.linspace(0.1, 0.9, n)})


def test_valid_quora_submission_passes():
    sub.validate_submission("quora", quora_frame(), [str(i) for i in range(6)])


@pytest.mark.parametrize("breakage, message", [
    (lambda df: df.iloc[1:], "lacks 1 of the 6 test ids: 0"),
    (lambda df: pd.concat([df, df.iloc[[3]]]), "1 duplicated id"),
    (lambda df: pd.concat([df, pd.DataFrame({"test_id": [99], "is_duplicate": [0.5]})]),
     "1 id.s. not in the test set: 99"),
    (lambda df: df.assign(is_duplicate=df["is_duplicate"].where(df["test_id"] != 2)), "NaN"),
    (lambda df: df.rename(columns={"is_duplicate": "prob"}), "expected exactly"),
    (lambda df: df[["is_duplicate", "test_id"]], "expected exactly"),
    (lambda df: df.assign(extra=1), "expected exactly"),
    (lambda df: df.assign(is_duplicate=df["is_duplicate"].replace(0.1, 0.0)), "clip"),
    (lambda df: df.assign(is_duplicate=df["is_duplicate"].replace(0.9, 1.2)), "clip"),
    (lambda df: df.assign(test_id=df["test_id"].astype(float)), "floating point"),
    (lambda df: df.assign(is_duplicate="yes"), "not numeric"),
    (lambda df: df.iloc[:0], "no rows"),
])
def test_validator_rejects(breakage, message):
    with pytest.raises(StageError, match=message):
        sub.validate_submission("quora", breakage(quora_frame()), [str(i) for i in range(6)])


def cervix_frame():
    probs = np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]])
    return pd.concat([pd.DataFrame({"image_name": ["0.jpg", "1.jpg", "2.jpg"]}),
                      pd.DataFrame(probs, columns=CERVIX_COLUMNS)], axis=1)


def test_cervix_rules():
    names = ["0.jpg", "1.jpg", "2.jpg"]
    sub.validate_submission("cervix", cervix_frame(), names)
    not_summing = cervix_frame()
    not_summing.loc[1, "Type_3"] = 0.5
    with pytest.raises(StageError, match=r"do not sum to 1 .*id 1.jpg sums to 0.700000"):
        sub.validate_submission("cervix", not_summing, names)
    renamed = cervix_frame()
    renamed.loc[2, "image_name"] = "2.png"
    with pytest.raises(StageError, match="lacks 1 of the 3 test ids: 2.jpg"):
        sub.validate_submission("cervix", renamed, names)


def test_real_cervix_module_follows_the_interface():
    mod = pytest.importorskip("pipelines.cervix.submission")
    task = competitions.get("cervix").task
    assert task.id_column == "image_name" and list(task.pred_columns) == CERVIX_COLUMNS
    assert mod.sample_submission_path(Path("raw")).name == "sample_submission_stg1.csv"
    test_pred = pd.DataFrame({"id": ["0.jpg", "1.jpg"], "Type_1": [0.2, 2.0], "Type_2": [0.3, 1.0],
                              "Type_3": [0.5, 1.0]})
    parser = argparse.ArgumentParser()
    mod.add_arguments(parser)
    df = mod.to_submission(test_pred, argparse.Namespace(**vars(parser.parse_args([])), comp="cervix",
                                                         source="sample"))
    sub.validate_submission("cervix", df, ["0.jpg", "1.jpg"])  # renormalised and clipped


def test_the_rules_are_the_tasks():
    """Columns, clipping and the row rule come from the Task: a binary task whose column is called target."""
    task = Task(kind="binary", id_column="id", pred_columns=("target",), clip=1e-6)
    frame = pd.DataFrame({"id": [3, 4], "target": [0.2, 1 - 1e-6]})
    sub.validate_submission("tabular", frame, ["3", "4"], task=task)
    with pytest.raises(StageError, match=r"outside \[1e-06, 1-1e-06\]"):
        sub.validate_submission("tabular", frame.assign(target=[0.2, 1 - 1e-9]), ["3", "4"], task=task)
    with pytest.raises(StageError, match="expected exactly"):
        sub.validate_submission("tabular", quora_frame(2), ["0", "1"], task=task)
    three = Task(kind="multiclass", id_column="image_name", pred_columns=tuple(CERVIX_COLUMNS), row_sum_tolerance=0.2)
    loose = cervix_frame()
    loose.loc[1, "Type_3"] = 0.7  # sums to 0.9: within this task's tolerance
    sub.validate_submission("cervix", loose, ["0.jpg", "1.jpg", "2.jpg"], task=three)
    with pytest.raises(StageError, match="do not sum to 1"):
        sub.validate_submission("cervix", loose, ["0.jpg", "1.jpg", "2.jpg"])  # the competition's own: 1e-6


def test_submission_modules_keep_no_clipping_constant_of_their_own():
    from pipelines.cervix import submission as cervix_sub

    from pipelines.common import task

    for mod in (quora_sub, cervix_sub):
        assert "EPS = " not in Path(mod.__file__).read_text() and mod.EPS is task.EPS


# ----- files -------------------------------------------------------------------------------------

def test_write_submission_never_overwrites(project_dirs):
    write_fake_raw(config.raw_dir("quora", "sample"), 6)
    first = sub.write_submission("quora", quora_frame(), "mine", "sample")
    content = first.read_bytes()
    second = sub.write_submission("quora", quora_frame().assign(is_duplicate=0.5), "mine.csv", "sample")
    third = sub.write_submission("quora", quora_frame(), "mine", "sample")
    assert [p.name for p in (first, second, third)] == ["mine.csv", "mine-2.csv", "mine-3.csv"]
    assert first.read_bytes() == content
    assert sorted(p.name for p in config.submissions_dir("quora").iterdir()) == ["mine-2.csv", "mine-3.csv",
                                                                                  "mine.csv"]
    sub.validate_submission_file("quora", second, "sample")


def test_write_submission_refuses_invalid_frames_and_names(project_dirs):
    write_fake_raw(config.raw_dir("quora", "sample"), 6)
    with pytest.raises(StageError, match="lacks"):
        sub.write_submission("quora", quora_frame(5), "short", "sample")
    with pytest.raises(StageError, match="bad submission name"):
        sub.write_submission("quora", quora_frame(), "../escape", "sample")
    out = config.submissions_dir("quora")
    assert not out.exists() or not list(out.iterdir())


def test_validate_file_against_sample_and_test_csv(project_dirs, caplog):
    raw = config.raw_dir("quora", "sample")
    write_fake_raw(raw, 6, with_sample_submission=False)
    path = project_dirs / "candidate.csv"
    write_csv(path, quora_frame())
    with caplog.at_level(logging.WARNING):
        sub.validate_submission_file("quora", path, "sample")
    assert "sample_submission.csv is absent" in caplog.text
    write_csv(path, quora_frame(4))
    with pytest.raises(StageError, match=r"candidate.csv: quora submission lacks 2 of the 6 test ids"):
        sub.validate_submission_file("quora", path, "sample")
    with pytest.raises(StageError, match="no submission file"):
        sub.validate_submission_file("quora", project_dirs / "nope.csv", "sample")


def test_reference_ids_from_image_folder(project_dirs, caplog):
    test_dir = config.raw_dir("cervix", "sample") / "test"
    test_dir.mkdir(parents=True)
    for name in ("2.jpg", "0.jpg", "notes.txt"):
        (test_dir / name).write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        assert list(sub.reference_ids("cervix", "sample")) == ["0.jpg", "2.jpg"]
    assert "image names" in caplog.text
    with pytest.raises(StageError, match="make data COMP=quora"):
        sub.reference_ids("quora", "sample")
