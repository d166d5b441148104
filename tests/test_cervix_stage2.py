"""Cervix as Kaggle ships it now (issue 17): the organisers' label fixes and withdrawn files, the released
stage-1 labels, the stage-2 test set and submission, additional images in training folds only (with
near-duplicates kept out of their twins' folds), the fit-only rows of the CV engine, and the sample's
whole layout through data -> features -> train -> blend -> submission."""
from __future__ import annotations

import shutil
from io import BytesIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipelines import config
from pipelines.__main__ import main
from pipelines.cervix import data as cervix
from pipelines.cervix import features
from pipelines.common import archives
from pipelines.common import submission as sub
from pipelines.common.cv import run_cv
from pipelines.common.io import read_json
from pipelines.common.log import StageError
from run_helpers import run_of

SMALL = ["--n-per-class", "8", "--n-test", "6", "--image-size", "96"]
FEATURES = ["--image-size", "32", "--n-folds", "3", "--workers", "2"]
BOW = ["--model", "bow_svm", "--n-words", "8"]


def run(*argv: str) -> None:
    assert main([argv[0], "--comp", "cervix", "--source", "sample", *argv[1:]]) == 0, argv


def lock() -> dict:
    return read_json(config.features_dir("cervix", "sample") / "features.lock.json")


def csv_ids(path: Path) -> list[str]:
    return pd.read_csv(path, dtype={"image_name": str})["image_name"].tolist()


@pytest.fixture
def sample_data(project_dirs, monkeypatch):
    """The built-in sample (whole layout, toy size) through the real data stage; no password given."""
    monkeypatch.delenv("CERVIX_7Z_PASSWORD", raising=False)
    run("data", *SMALL)
    return config.raw_dir("cervix", "sample")


# ----- the sample and the data stage -------------------------------------------------------------

def test_sample_ships_the_whole_layout_and_the_data_stage_unpacks_it(tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    cervix.generate_sample(shipped, n_per_class=6, n_test=4, image_size=48, n_additional=3, n_test_stg2=5)
    assert {p.name for p in shipped.iterdir()} == {
        "train", "test", "sample_submission_stg1.csv", "sample_submission_stg2.csv", "solution_stg1_release.csv",
        "fixed_labels_v2.csv", "removed_files.csv", "test_stg2.7z", "test_stg2_7z_password.txt",
        "additional_Type_1_v2.7z", "additional_Type_2_v2.7z", "additional_Type_3_v2.7z"}
    with pytest.raises(StageError, match="password-protected"):
        archives.extract(shipped / "test_stg2.7z", tmp_path / "x")  # really encrypted
    assert cervix.archive_password(shipped) == cervix.SAMPLE_PASSWORD
    stg2 = csv_ids(shipped / "sample_submission_stg2.csv")
    assert stg2[:4] == csv_ids(shipped / "sample_submission_stg1.csv") and len(stg2) == 4 + 5

    # a folder the user downloaded: the password is read from the file beside the archive
    from pipelines.common.acquire import acquire

    monkeypatch.setattr(config, "DATA_DIR", tmp_path / "data")
    monkeypatch.delenv("CERVIX_7Z_PASSWORD", raising=False)
    manifest = acquire("cervix", str(shipped))
    raw = config.raw_dir("cervix", str(shipped))
    assert len(list((raw / "test_stg2").glob("*.jpg"))) == 5 and not list(raw.glob("*.7z"))
    assert manifest["counts"]["additional_images"] == 9 and manifest["stage"] == 2
    assert manifest["counts"]["sample_submission_stg2_rows"] == 9 and manifest["counts"]["stage1_labels"] == 4

    (shipped / "test_stg2_7z_password.txt").unlink()  # no password anywhere: one line saying where it goes
    with pytest.raises(StageError, match=r"test_stg2\.7z is password-protected.*--password"):
        acquire("cervix", str(shipped), force=True)


def test_label_fixes_applied_and_removed_files_dropped_with_counts(sample_data, capfd):
    manifest = read_json(config.source_dir("cervix", "sample") / "manifest.json")
    fixes = pd.read_csv(sample_data / "fixed_labels_v2.csv")
    removed = pd.read_csv(sample_data / "removed_files.csv")
    assert len(fixes) == 3 and len(removed) == 2
    labels = manifest["labels"]
    assert manifest["counts"]["relabelled"] == 3 and manifest["counts"]["removed"] == 2
    assert not labels["unmatched_fixes"] and not labels["unmatched_removals"]
    for row in fixes.itertuples():
        (path,) = [p for p in labels["relabelled"] if p.endswith(f"/{row.old_label}/{row.filename}")]
        assert labels["relabelled"][path] == row.new_label
    assert sorted(Path(p).name for p in labels["removed"]) == sorted(removed["filename"])

    capfd.readouterr()
    run("features", *FEATURES, "--use-additional")
    logged = capfd.readouterr().err
    assert "3 image(s) change type" in logged and "2 withdrawn (removed_files.csv)" in logged
    out = config.features_dir("cervix", "sample")
    names = read_json(out / "train_names.json")
    y = np.load(out / "train_labels.npy")
    for path, new in labels["relabelled"].items():
        assert y[names.index(path)] == features.CLASS_NAMES.index(new)  # the folder said otherwise
        assert path.split("/")[1] != new
    assert not set(labels["removed"]) & set(names)
    assert lock()["relabelled"] == labels["relabelled"] and lock()["withdrawn"] == labels["removed"]
    # the images themselves are left as shipped
    assert all((sample_data / p).is_file() for p in labels["removed"])


def test_fix_and_removal_matching_rules(tmp_path):
    images = ["train/Type_1/5.jpg", "train/Type_2/7.jpg", "additional/Type_1/5.jpg", "additional/Type_3/9.jpg"]
    raw = tmp_path
    pd.DataFrame({"filename": ["5.jpg", "C:\\data\\additional\\Type_3\\9.jpg", "404.jpg"],
                  "old_label": ["Type_1", "Type_3", "Type_2"],
                  "new_label": ["Type_3", "Type_2", "Type_1"]}).to_csv(raw / cervix.FIXED_LABELS, index=False)
    pd.DataFrame({"filename": ["additional/Type_1/5.jpg", "nope.jpg"]}).to_csv(raw / cervix.REMOVED_FILES,
                                                                            index=False)
    got = cervix.organiser_labels(raw, images)
    # 5.jpg of Type_1 is in train/ and additional/: both fixed, but the additional one is withdrawn
    assert got["relabelled"] == {"train/Type_1/5.jpg": "Type_3", "additional/Type_3/9.jpg": "Type_2"}
    assert got["removed"] == ["additional/Type_1/5.jpg"]
    assert got["unmatched_fixes"] == ["404.jpg"] and got["unmatched_removals"] == ["nope.jpg"]
    pd.DataFrame({"filename": ["5.jpg"], "old_label": ["Type_1"], "new_label": ["type 3"]}).to_csv(
        raw / cervix.FIXED_LABELS, index=False)
    with pytest.raises(StageError, match=r"fixed_labels_v2\.csv: '5\.jpg' has type 'type 3'"):
        cervix.organiser_labels(raw, images)


# ----- rows: stage-1 labels, additional images, folds ----------------------------------------------

def test_stage1_labels_join_the_training_rows(sample_data):
    run("features", *FEATURES)
    out = config.features_dir("cervix", "sample")
    names = read_json(out / "train_names.json")
    y, folds = np.load(out / "train_labels.npy"), np.load(out / "folds.npy")
    solution = pd.read_csv(sample_data / "solution_stg1_release.csv")
    truth = dict(zip(solution["image_name"], solution[list(cervix.CLASSES)].to_numpy().argmax(axis=1)))
    stage1 = [i for i, n in enumerate(names) if n.startswith("test/")]
    assert sorted(names[i] for i in stage1) == sorted(f"test/{n}" for n in truth)
    assert all(y[i] == truth[Path(names[i]).name] for i in stage1)
    assert (folds[stage1] >= 0).all()  # validated like train/
    assert lock()["params_used"]["stage1_labels"] is True and lock()["n_stage1_labelled"] == 6

    run("train", *BOW)
    model_dir = run_of("cervix", "sample", "bow_svm")
    assert read_json(model_dir / "params.json")["params"]["data"]["n_stage1_labelled"] == 6
    oof = pd.read_parquet(model_dir / "oof.parquet")
    assert set(oof["id"]) >= {f"test/{n}" for n in truth}

    run("features", *FEATURES, "--no-stage1-labels")
    assert not [n for n in read_json(out / "train_names.json") if n.startswith("test/")]
    assert lock()["params_used"]["stage1_labels"] is False


def test_no_additional_image_in_any_validation_fold(sample_data):
    run("features", *FEATURES)
    run("train", *BOW)
    model_dir = run_of("cervix", "sample", "bow_svm")
    oof_without = pd.read_parquet(model_dir / "oof.parquet")

    run("features", *FEATURES, "--use-additional")
    tensors = features.load_tensors("sample")
    additional = np.array([n.startswith("additional/") for n in tensors.train_names])
    assert additional.sum() == 3 * 4 - 1  # the sample's additional images, less the withdrawn one
    assert (tensors.folds[additional] == -1).all() and (tensors.folds[~additional] >= 0).all()
    # the planted near-copies (the first additional image of each type) are found, with their train twin
    twins = lock()["twins"]
    assert len(twins) == 3 and all(len(v) == 1 and v[0].startswith("train/") for v in twins.values())
    assert {k.split("/")[1] for k in twins} == set(cervix.CLASSES)
    for extra, (twin,) in twins.items():
        i, j = tensors.train_names.index(extra), tensors.train_names.index(twin)
        assert tensors.fit_exclude[i].tolist() == [k == tensors.folds[j] for k in range(3)]
    assert not tensors.fit_exclude[~additional].any()

    run("train", *BOW)
    oof = pd.read_parquet(model_dir / "oof.parquet")
    metrics = read_json(model_dir / "metrics.json")
    assert not oof["id"].str.startswith("additional/").any()
    # CV stays on the same validated rows and folds with and without the additional images: comparable
    assert oof["id"].tolist() == oof_without["id"].tolist() and oof["fold"].tolist() == oof_without["fold"].tolist()
    assert metrics["n_train"] == len(oof) and metrics["n_fit_only"] == additional.sum()
    assert read_json(model_dir / "params.json")["params"]["data"]["twins"] == 3


class Recorder:
    """A CV model that predicts the prior and records which rows each fold trained and validated on."""

    name = "recorder"
    params = {"model": "recorder"}

    def __init__(self, y):
        self.y, self.seen = np.asarray(y), {}

    def fit(self, fold, train_idx, valid_idx, fold_dir):
        self.seen[fold] = (train_idx.copy(), valid_idx.copy())
        return np.bincount(self.y[train_idx], minlength=2) / len(train_idx)

    def predict_valid(self, prior, valid_idx):
        return np.full(len(valid_idx), prior[1])

    def predict_test(self, prior):
        return np.full(2, prior[1])

    def save(self, prior, fold_dir):
        pass


def test_cv_engine_fit_only_rows_and_fold_exclusions(tmp_path):
    y = np.array([0, 1] * 6 + [1, 1, 0])
    folds = np.array([0, 1, 2] * 4 + [-1, -1, -1])
    exclude = np.zeros((15, 3), dtype=bool)
    exclude[13, 1] = exclude[14, [0, 2]] = True
    ids = np.array([f"r{i}" for i in range(15)], dtype=object)
    model = Recorder(y)
    res = run_cv(model, comp="quora", source="sample", out_dir=tmp_path / "m", y=y, folds=folds, train_ids=ids,
                 test_ids=np.array(["t0", "t1"], dtype=object), task="binary", class_names=["is_duplicate"],
                 seed=0, fit_exclude=exclude)
    for k, (train_idx, valid_idx) in model.seen.items():
        assert not set(valid_idx) & {12, 13, 14}  # fit-only rows are never validated
        assert set(train_idx) == {i for i in range(15) if folds[i] != k and not exclude[i, k]}
    oof = pd.read_parquet(tmp_path / "m" / "oof.parquet")
    assert oof["id"].tolist() == ids[:12].tolist() and res["n_train"] == 12 and res["n_fit_only"] == 3

    # without fit-only rows (and an exclusion that excludes nothing) the outputs are the engine's usual ones
    def plain(out, **kw):
        run_cv(Recorder(y[:12]), comp="quora", source="sample", out_dir=out, y=y[:12], folds=folds[:12],
               train_ids=ids[:12], test_ids=np.array(["t0", "t1"], dtype=object), task="binary",
               class_names=["is_duplicate"], seed=0, **kw)
        return {n: (out / n).read_bytes() for n in ("oof.parquet", "test.parquet")}, read_json(out / "metrics.json")
    (files_a, metrics_a), (files_b, metrics_b) = plain(tmp_path / "a"), plain(
        tmp_path / "b", fit_exclude=np.zeros((12, 3), dtype=bool))
    assert files_a == files_b and "n_fit_only" not in metrics_a
    with pytest.raises(ValueError, match="fit_exclude has shape"):
        plain(tmp_path / "c", fit_exclude=np.ones((12, 2), dtype=bool))


def test_difference_hash_tells_copies_from_other_photos():
    rng = np.random.default_rng(3)
    photos = [cervix.render_image(rng, cervix.CLASSES[i % 3], 96) for i in range(24)]
    arrays = np.stack([np.asarray(features.fit_square(p, 48, "crop")) for p in photos])
    copies = []
    for p in photos[:8]:
        copy = Image.open(BytesIO(cervix._near_copy(cervix._jpeg_bytes(p, rng, False), rng))).convert("RGB")
        copies.append(np.asarray(features.fit_square(copy, 48, "crop")))
    found = features.twins_of(features.difference_hash(np.stack(copies)), features.difference_hash(arrays))
    assert [f.tolist() for f in found] == [[i] for i in range(8)]  # each copy's own photo, and nothing else


# ----- stages: test tensors and submissions ---------------------------------------------------------

def test_sample_layout_through_every_stage_to_a_stage2_submission(sample_data):
    """data -> features -> train -> blend -> submission on the sample's whole layout, by the stage entry points."""
    run("features", *FEATURES, "--use-additional")
    stg2 = csv_ids(sample_data / "sample_submission_stg2.csv")
    assert read_json(config.features_dir("cervix", "sample") / "test_names.json") == stg2  # stage 2 by default
    assert lock()["params_used"]["stage"] == 2
    run("train", *BOW)
    run("blend", "--name", "stage2")
    path = config.submissions_dir("cervix") / "stage2.csv"
    assert sorted(csv_ids(path)) == sorted(stg2) and len(stg2) == 6 + 20
    sub.validate_submission_file("cervix", path, "sample")  # the upload check: the stage Kaggle scores
    assert main(["compare", "--comp", "cervix", "--source", "sample"]) == 0


def test_stage1_still_makes_the_stage1_format(sample_data):
    run("features", *FEATURES, "--stage", "1")
    assert read_json(config.features_dir("cervix", "sample") / "test_names.json") == \
        csv_ids(sample_data / "sample_submission_stg1.csv")
    run("train", *BOW)
    run("blend", "--name", "stage1")
    path = config.submissions_dir("cervix") / "stage1.csv"
    frame = pd.read_csv(path, dtype={"image_name": str})
    assert list(frame.columns) == ["image_name", "Type_1", "Type_2", "Type_3"]
    assert sorted(frame["image_name"]) == sorted(csv_ids(sample_data / "sample_submission_stg1.csv"))
    # `make submit` checks the format Kaggle scores: stage 2, since raw/ has it
    with pytest.raises(StageError, match=r"stage1\.csv: .*lacks 20 of the 26 test ids.*sample_submission_stg2\.csv"):
        sub.validate_submission_file("cervix", path, "sample")


def test_stage2_needs_its_files_and_stage1_is_the_default_without_them(sample_data, caplog):
    (sample_data / "sample_submission_stg2.csv").unlink()
    with pytest.raises(StageError, match=r"--stage 2: .* lacks sample_submission_stg2\.csv.*--stage 1"):
        features.build_features("sample", image_size=32, n_folds=3, workers=2, stage=2)
    features.build_features("sample", image_size=32, n_folds=3, workers=2)
    assert lock()["params_used"]["stage"] == 1
    assert len(read_json(config.features_dir("cervix", "sample") / "test_names.json")) == 6
    shutil.rmtree(sample_data / "test_stg2")
    (sample_data / "solution_stg1_release.csv").unlink()
    with pytest.raises(StageError, match=r"--stage1-labels: no solution_stg1_release\.csv"):
        features.build_features("sample", image_size=32, n_folds=3, workers=2, stage1_labels=True)
    # the upload check on stage-1-only data: stage 1, with a warning that Kaggle scores stage 2
    from pipelines.cervix import submission as cervix_sub

    with caplog.at_level("WARNING"):
        assert cervix_sub.scored_submission_path(sample_data).name == "sample_submission_stg1.csv"
    assert "stage-2 format" in caplog.text
