"""Quora: the synthetic sample (schema, determinism, realism) and the validation of raw/."""
from __future__ import annotations

import gzip
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import SHARED_DATA
from data_helpers import folder_bytes, project  # noqa: F401
from pipelines import config
from pipelines.common.log import StageError
from pipelines.quora import data as quora


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    raw = tmp_path_factory.mktemp("quora") / "raw"
    quora.generate_sample(raw, n_train=3000, n_test=800, seed=7)
    return raw


def test_schema_is_kaggles(sample):
    assert sorted(p.name for p in sample.iterdir()) == ["sample_submission.csv", "test.csv", "train.csv"]
    train = pd.read_csv(sample / "train.csv")
    test = pd.read_csv(sample / "test.csv")
    sub = pd.read_csv(sample / "sample_submission.csv")
    assert list(train.columns) == quora.TRAIN_COLUMNS and len(train) == 3000
    assert list(test.columns) == quora.TEST_COLUMNS and len(test) == 800
    assert list(sub.columns) == quora.SUBMISSION_COLUMNS and (sub["is_duplicate"] == 1).all()
    assert (train["id"].to_numpy() == np.arange(3000)).all() and (sub["test_id"] == test["test_id"]).all()
    for col in ("id", "qid1", "qid2", "is_duplicate"):
        assert pd.api.types.is_integer_dtype(train[col])
    assert set(train["is_duplicate"]) == {0, 1}
    assert (sample / "train.csv").read_text().startswith('"id","qid1","qid2","question1","question2","is_duplicate"\n')


def test_same_seed_same_bytes_other_seed_other_data(sample, tmp_path):
    quora.generate_sample(tmp_path / "again", n_train=3000, n_test=800, seed=7)
    assert folder_bytes(tmp_path / "again") == folder_bytes(sample)
    quora.generate_sample(tmp_path / "other", n_train=3000, n_test=800, seed=8)
    assert (tmp_path / "other" / "train.csv").read_bytes() != (sample / "train.csv").read_bytes()


def test_positive_rate_missing_questions_and_reused_qids(sample):
    train = pd.read_csv(sample / "train.csv")
    assert 0.30 <= train["is_duplicate"].mean() <= 0.44
    assert train[["question1", "question2"]].isna().sum().sum() >= 2  # a few, like Kaggle's train.csv
    qids = pd.concat([train["qid1"], train["qid2"]])
    texts = pd.concat([train["question1"], train["question2"]])
    assert (qids.value_counts() > 1).sum() > 100  # questions recur across pairs (graph features mean something)
    assert (qids.value_counts() > 1).mean() < 0.6  # ... but most do not
    # One qid, one text: the pairs are consistent views of a question graph.
    per_qid = pd.DataFrame({"qid": qids.to_numpy(), "text": texts.to_numpy()}).dropna().groupby("qid")["text"]
    assert (per_qid.nunique() == 1).all()
    assert qids.min() == 1 and train["qid1"].iloc[0] == 1 and train["qid2"].iloc[0] == 2


def test_duplicates_are_paraphrases_and_negatives_are_hard(sample):
    train = pd.read_csv(sample / "train.csv").dropna()

    def overlap(row):
        a = set(row.question1.lower().strip("?").split())
        b = set(row.question2.lower().strip("?").split())
        return len(a & b) / len(a | b)

    train["overlap"] = train.apply(overlap, axis=1)
    pos, neg = train[train.is_duplicate == 1], train[train.is_duplicate == 0]
    assert (pos.question1 != pos.question2).all()  # real paraphrases, not copies
    assert pos.overlap.mean() > neg.overlap.mean()  # learnable ...
    assert (neg.overlap > 0.5).mean() > 0.08  # ... but not from word overlap alone: hard negatives
    assert (pos.overlap < 0.5).mean() > 0.3  # and paraphrases that share few words


def test_kaggle_size_is_the_competitions():
    from pipelines.common.acquire import sample_options

    assert sample_options("quora", "kaggle") == {"n_train": 404_290, "n_test": 2_345_796, "seed": config.SEED}
    assert sample_options("quora", "default", n_train=100)["n_train"] == 100


def test_validate_reports_counts_and_missing_questions(sample):
    report = quora.validate(sample)
    assert report["counts"]["train_rows"] == 3000 and report["counts"]["test_rows"] == 800
    assert report["class_balance"]["0"] + report["class_balance"]["1"] == 3000
    nan = sum(v["nan"] for v in report["missing_questions"]["train.csv"].values())
    assert nan >= 2 and any("missing" in w for w in report["warnings"])


def _copy(sample, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(sample, raw)
    return raw


def test_missing_file_names_the_file_and_the_fix(sample, tmp_path):
    raw = _copy(sample, tmp_path)
    (raw / "test.csv").unlink()
    with pytest.raises(StageError, match=r"test\.csv not found.*kaggle\.com/competitions/quora-question-pairs"):
        quora.validate(raw)


def test_missing_column(sample, tmp_path):
    raw = _copy(sample, tmp_path)
    pd.read_csv(raw / "train.csv").drop(columns=["qid2"]).to_csv(raw / "train.csv", index=False)
    with pytest.raises(StageError, match=r"train\.csv: missing column\(s\) qid2"):
        quora.validate(raw)


def test_duplicate_id(sample, tmp_path):
    raw = _copy(sample, tmp_path)
    df = pd.read_csv(raw / "test.csv")
    df.loc[5, "test_id"] = 4
    df.to_csv(raw / "test.csv", index=False)
    with pytest.raises(StageError, match=r"test\.csv: 1 duplicate test_id"):
        quora.validate(raw)


def test_label_out_of_range(sample, tmp_path):
    raw = _copy(sample, tmp_path)
    df = pd.read_csv(raw / "train.csv")
    df.loc[3, "is_duplicate"] = 2
    df.to_csv(raw / "train.csv", index=False)
    with pytest.raises(StageError, match="is_duplicate must be 0 or 1"):
        quora.validate(raw)


def test_non_integer_ids(sample, tmp_path):
    raw = _copy(sample, tmp_path)
    df = pd.read_csv(raw / "train.csv")
    df["qid1"] = df["qid1"].astype(str)
    df.loc[0, "qid1"] = "abc"
    df.to_csv(raw / "train.csv", index=False)
    with pytest.raises(StageError, match="qid1 must hold integers"):
        quora.validate(raw)


def test_nan_and_blank_questions_are_counted_not_fatal(sample, tmp_path):
    raw = _copy(sample, tmp_path)
    df = pd.read_csv(raw / "train.csv", keep_default_na=False, na_values=[""])
    df.loc[10, "question1"] = np.nan
    df.loc[11, "question2"] = "   "
    df.loc[12, "question2"] = "NA"  # a real question text, not a missing value
    df.to_csv(raw / "train.csv", index=False)
    before = quora.validate(sample)["missing_questions"]["train.csv"]
    after = quora.validate(raw)["missing_questions"]["train.csv"]
    assert after["question1"]["nan"] == before["question1"]["nan"] + 1
    assert after["question2"]["empty"] == before["question2"]["empty"] + 1
    assert after["question2"]["nan"] == before["question2"]["nan"]


def test_absent_sample_submission_is_a_warning(sample, tmp_path):
    raw = _copy(sample, tmp_path)
    (raw / "sample_submission.csv").unlink()
    report = quora.validate(raw)
    assert report["counts"]["sample_submission_rows"] is None
    assert any("sample_submission.csv absent" in w for w in report["warnings"])


def test_unreadable_csv(sample, tmp_path):
    raw = _copy(sample, tmp_path)
    (raw / "train.csv").write_bytes(gzip.compress(b"not,a\ncsv,file\n"))  # gzip bytes under a .csv name
    with pytest.raises(StageError, match=r"train\.csv"):
        quora.validate(raw)


@pytest.mark.realdata
def test_import_of_the_real_quora_files(project):
    from pipelines.common.acquire import acquire

    src = SHARED_DATA / "quora"
    if not (src / "train.csv.gz").is_file():
        pytest.skip(f"real data not available at {src}")
    manifest = acquire("quora", str(src))
    assert manifest["counts"]["train_rows"] == 11_587 and manifest["counts"]["test_rows"] == 999
    assert manifest["source"] == "local-quora" and set(manifest["files"]) == {"train.csv", "test.csv"}
    assert any("sample_submission.csv absent" in w for w in manifest["warnings"])
    raw = config.raw_dir("quora", str(src))
    with gzip.open(src / "train.csv.gz", "rb") as f:
        assert (raw / "train.csv").read_bytes() == f.read()  # exactly the shipped bytes, unpacked
