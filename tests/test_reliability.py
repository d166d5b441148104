"""Issue 14: nothing mixed, nothing stale, one line for every failure.

Data identity, stale-input refusal, cached outputs verified, disk full, missing test predictions,
submission provenance, archive limits, and the smaller messages; every test drives the real stage
entry points (``pipelines.__main__.main``) or the shared function the stages call.
"""
from __future__ import annotations

import errno
import logging

import numpy as np
import pandas as pd
import pytest

from data_helpers import project  # noqa: F401
from pipelines import config
from pipelines.__main__ import main
from pipelines.common import acquire as acq
from pipelines.common.io import read_json
from pipelines.common.log import StageError


def _quora_folder(root, seed: int, n_train: int = 60, n_test: int = 20):
    from pipelines.quora.data import generate_sample

    generate_sample(root, n_train=n_train, n_test=n_test, seed=seed)
    (root / "sample_submission.csv").unlink()
    return root


# ---------------------------------------------------------------- data identity
def test_two_paths_with_the_same_folder_name_never_share_a_data_folder(project, tmp_path):
    first = _quora_folder(tmp_path / "x1" / "quora", seed=1)
    second = _quora_folder(tmp_path / "x2" / "quora", seed=2, n_train=70)
    assert main(["data", "--comp", "quora", "--source", str(first)]) == 0
    assert main(["data", "--comp", "quora", "--source", str(second)]) == 0
    one, two = config.source_dir("quora", str(first)), config.source_dir("quora", str(second))
    assert one != two
    assert one.name == "local-quora"  # the first path keeps the plain label (existing labels stay valid)
    assert two.name.startswith("local-quora-") and len(two.name) == len("local-quora-") + 8
    # each folder still holds its own path's data
    assert (one / "raw" / "train.csv").read_bytes() == (first / "train.csv").read_bytes()
    assert (two / "raw" / "train.csv").read_bytes() == (second / "train.csv").read_bytes()
    for folder, path in ((one, first), (two, second)):
        manifest = read_json(folder / "manifest.json")
        assert manifest["label"] == folder.name and manifest["source_path"] == str(path.resolve())
    # the label works as a source too, and the path keeps finding its folder
    assert config.source_dir("quora", two.name) == two
    assert config.source_label(str(second)) == two.name and config.source_label(str(first)) == "local-quora"


# ---------------------------------------------------------------- disk full
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_in_save_sparse_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    import scipy.sparse as sp

    from pipelines.common import io

    def half_then_full(path, matrix, compressed=False):
        open(path, "wb").write(b"half")
        _enospc()

    monkeypatch.setattr(sp, "save_npz", half_then_full)
    target = tmp_path / "feats" / "tfidf.npz"
    with pytest.raises(io.DiskFullError) as err:
        io.save_sparse(target, sp.random(50, 40, density=0.1, format="csr", random_state=0))
    message = str(err.value)
    assert str(target) in message and "needed" in message and "free" in message and "\n" not in message
    assert list(target.parent.iterdir()) == []  # nothing half-written


def test_disk_full_in_parquet_writer_is_one_line(tmp_path, monkeypatch):
    from pipelines.common import io

    def arrow_full(self, path, **kw):
        # what pyarrow raises: an OSError subclass whose errno is lost, the reason kept in the text
        raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", arrow_full)
    target = tmp_path / "oof.parquet"
    with pytest.raises(io.DiskFullError, match="disk full while writing .*oof.parquet"):
        io.write_parquet(target, pd.DataFrame({"a": [1, 2]}))
    assert list(tmp_path.iterdir()) == []


def test_disk_full_in_the_bow_model_save_and_edquot(tmp_path, monkeypatch):
    import pickle

    from pipelines.common import io
    from pipelines.quora.models.bow import BowModel

    def quota(*a, **k):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(pickle, "dumps", quota)
    with pytest.raises(io.DiskFullError, match="model.pkl"):
        BowModel.save(object.__new__(BowModel), {"w": 1}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_outside_the_io_helpers_is_one_line_on_the_cli(project, monkeypatch, capsys):
    from pipelines.quora import features

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/word2vec.kv")

    assert main(["data", "--comp", "quora", "--source", "sample", "--n-train", "120", "--n-test", "30"]) == 0
    monkeypatch.setattr(features, "build_features", full)
    capsys.readouterr()
    assert main(["features", "--comp", "quora", "--source", "sample"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "/somewhere/word2vec.kv" in errors[0] and "free" in errors[0]
