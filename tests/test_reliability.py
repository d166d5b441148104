"""Issue 14: nothing mixed, nothing stale, one line for every failure.

Data identity, stale-input refusal, cached outputs verified, disk full, missing test predictions,
submission provenance, archive limits, and the smaller messages; every test drives the real stage
entry points (``pipelines.__main__.main``) or the shared function the stages call.
"""
from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compare_helpers import FixedModel
from data_helpers import project  # noqa: F401
from pipelines import config
from pipelines.__main__ import EXIT_STAGE_ERROR, main
from pipelines.common import acquire as acq
from pipelines.common.io import read_json
from pipelines.common.log import StageError
from run_helpers import default_run, run_of


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
    assert main(["features", "--comp", "quora", "--source", "sample"]) == EXIT_STAGE_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "/somewhere/word2vec.kv" in errors[0] and "free" in errors[0]


# ---------------------------------------------------------------- stale runs, provenance, submit
QUORA_SAMPLE = ["--n-train", "240", "--n-test", "60"]


def _stage(*argv) -> int:
    return main([argv[0], "--comp", argv[1], "--source", argv[2], *argv[3:]])


@pytest.fixture
def quora_blend(project, capsys):
    """The real stages on a tiny Quora sample: data, features (2 folds), bow_lr, blend."""
    assert _stage("data", "quora", "sample", *QUORA_SAMPLE) == 0
    assert _stage("features", "quora", "sample", "--n-folds", "2", "--w2v-epochs", "1") == 0
    assert _stage("train", "quora", "sample", "--model", "bow_lr") == 0
    assert _stage("blend", "quora", "sample", "--name", "first") == 0
    capsys.readouterr()
    return config.submissions_dir("quora") / "first.csv"


def test_blend_refuses_runs_trained_on_other_folds_and_allow_stale_is_recorded(quora_blend, capsys):
    from pipelines.common import provenance

    record = read_json(provenance.record_path(quora_blend))
    key = f"bow_lr/{default_run('quora', 'sample', 'bow_lr').name}"  # the run's key: <model>/<run>
    assert record["source"] == "sample" and list(record["runs"]) == [key]
    assert any(k.endswith("features.lock.json") for k in record["features"]) and record["allow_stale"] is False
    assert _stage("features", "quora", "sample", "--n-folds", "3", "--w2v-epochs", "1") == 0
    capsys.readouterr()
    assert _stage("blend", "quora", "sample") == EXIT_STAGE_ERROR  # was: "submission of this blend already written"
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if " ERROR " in x)
    assert "bow_lr" in line and "features.lock.json" in line and "make train COMP=quora SOURCE=sample MODEL=bow_lr" in line
    assert "--allow-stale" in line
    assert _stage("blend", "quora", "sample", "--allow-stale", "--name", "stale") == 0
    run = read_json(config.model_dir("quora", "sample", "blend") / "run.json")
    assert run["allow_stale"] is True and key in run["stale_models"]
    stale_record = read_json(provenance.record_path(config.submissions_dir("quora") / "stale.csv"))
    assert stale_record["allow_stale"] is True and key in stale_record["stale_models"]
    # re-training makes the blend possible again without the override
    assert _stage("train", "quora", "sample", "--model", "bow_lr") == 0
    assert _stage("blend", "quora", "sample", "--name", "fresh") == 0


def test_train_refuses_features_older_than_the_raw_data(quora_blend, capsys):
    train_csv = config.raw_dir("quora", "sample") / "train.csv"
    train_csv.write_bytes(train_csv.read_bytes() + b"")  # same bytes, new mtime: no longer what features saw
    import os

    os.utime(train_csv, ns=(train_csv.stat().st_atime_ns, train_csv.stat().st_mtime_ns + 10**9))
    capsys.readouterr()
    assert _stage("train", "quora", "sample", "--model", "bow_lr") == EXIT_STAGE_ERROR
    line = next(x for x in capsys.readouterr().err.splitlines() if " ERROR " in x)
    assert "train.csv" in line and "make features COMP=quora SOURCE=sample" in line


def test_a_truncated_cached_feature_file_reruns_its_step_or_is_one_line(quora_blend, capsys):
    features = config.features_dir("quora", "sample")
    victim = sorted(features.glob("tfidf_*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:100])  # damaged after the stage finished
    capsys.readouterr()
    # train: one line naming the file (was a BadZipFile traceback)
    assert _stage("train", "quora", "sample", "--model", "bow_lr", "--force") == EXIT_STAGE_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if " ERROR " in x)
    assert victim.name in line and "damaged" in line and "make features COMP=quora SOURCE=sample" in line
    # features: no longer "up to date"; the damaged step runs again and the file is whole
    assert _stage("features", "quora", "sample", "--n-folds", "2", "--w2v-epochs", "1") == 0
    err = capsys.readouterr().err
    assert f"{victim.name} (100 bytes" in err and "features/tfidf: running (damaged outputs" in err
    assert "features/text: running" not in err  # only the step that wrote it
    import scipy.sparse as sp

    sp.load_npz(victim)
    assert _stage("train", "quora", "sample", "--model", "bow_lr") == 0


def test_quora_features_force_rebuilds_every_step(quora_blend, capsys):
    assert _stage("features", "quora", "sample", "--n-folds", "2", "--w2v-epochs", "1") == 0
    assert "nothing to do" in capsys.readouterr().err
    assert _stage("features", "quora", "sample", "--n-folds", "2", "--w2v-epochs", "1", "--force") == 0
    err = capsys.readouterr().err
    assert "nothing to do" not in err and "features/text: running (forced)" in err


def test_a_damaged_fold_checkpoint_is_fitted_again(quora_blend, capsys):
    ckpt = run_of("quora", "sample", "bow_lr") / "folds" / "fold_0.npz"
    # a resumed run re-reads its fold checkpoints; a truncated one is refitted, not a traceback (the run is left
    # unfinished: a finished run whose outputs are intact is up to date and reads none of them)
    (ckpt.parent / "fold_1.npz").unlink()
    (ckpt.parent.parent / "oof.parquet").unlink()
    ckpt.write_bytes(ckpt.read_bytes()[:50])
    capsys.readouterr()
    assert _stage("train", "quora", "sample", "--model", "bow_lr") == 0
    err = capsys.readouterr().err
    assert "fold_0.npz is damaged; fitting the fold again" in err


def _kaggle_copy_of_the_sample(tmp_path):
    """Kaggle data (through the fake API) with the sample's very files, so the test ids match."""
    from data_helpers import FakeKaggleApi, zip_bytes

    raw = config.raw_dir("quora", "sample")
    files = {name: (raw / name).read_bytes() for name in ("train.csv", "test.csv", "sample_submission.csv")}
    acq.acquire("quora", "kaggle", api=FakeKaggleApi(files={"quora-question-pairs.zip": zip_bytes(files)}))
    return FakeKaggleApi()


def test_submit_refuses_a_sample_built_csv_whatever_the_source(quora_blend, tmp_path):
    from pipelines.common import kaggle_io

    api = _kaggle_copy_of_the_sample(tmp_path)
    with pytest.raises(StageError, match="built from the synthetic sample.*--force-upload"):
        kaggle_io.submit("quora", quora_blend, "m", api=api, source="kaggle", timeout=0)
    assert not any(c[0] == "competition_submit" for c in api.calls)
    # a copy without its record is refused too
    bare = tmp_path / "bare.csv"
    bare.write_bytes(quora_blend.read_bytes())
    with pytest.raises(StageError, match="has no record"):
        kaggle_io.submit("quora", bare, "m", api=api, source="kaggle", timeout=0)
    # an edited file no longer matches its record
    edited = config.submissions_dir("quora") / "first.csv"
    edited.write_text(edited.read_text().replace("0.", "0.0", 1))
    with pytest.raises(StageError, match="not the file its record"):
        kaggle_io.submit("quora", edited, "m", api=api, source="kaggle", timeout=0)
    # --force-upload: uploaded, and the reason kept in the result
    result = kaggle_io.submit("quora", bare, "m", api=api, source="kaggle", timeout=0, force_upload=True)
    assert "has no record" in result["forced_despite"]
    assert any(c[0] == "competition_submit" for c in api.calls)


def test_blend_warns_but_does_not_refuse_a_run_made_in_another_environment(quora_blend, capsys):
    from pipelines.common.io import write_json

    path = run_of("quora", "sample", "bow_lr") / "run.json"
    record = read_json(path)
    record["environment"]["packages"]["numpy"] = "1.0.0"
    record["environment"]["packages_sha256"] = "0" * 64
    write_json(path, record)
    assert _stage("blend", "quora", "sample", "--name", "other-env") == 0
    err = capsys.readouterr().err
    assert "made in another environment" in err and "numpy 1.0.0" in err and " ERROR " not in err
    assert (config.submissions_dir("quora") / "other-env.csv").is_file()


def test_submit_refuses_a_csv_from_stale_runs(project, tmp_path, capsys, monkeypatch):
    from pipelines.common import kaggle_io

    assert _stage("data", "quora", "sample", *QUORA_SAMPLE) == 0
    _kaggle_copy_of_the_sample(tmp_path)
    assert _stage("features", "quora", "kaggle", "--n-folds", "2", "--w2v-epochs", "1") == 0
    assert _stage("train", "quora", "kaggle", "--model", "bow_lr") == 0
    assert _stage("blend", "quora", "kaggle", "--name", "real") == 0
    path = config.submissions_dir("quora") / "real.csv"
    api = kaggle_io_api = _FakeApi()
    monkeypatch.setattr(kaggle_io, "make_api", lambda: kaggle_io_api)
    assert _stage("features", "quora", "kaggle", "--n-folds", "3", "--w2v-epochs", "1") == 0
    capsys.readouterr()
    assert _stage("submit", "quora", "kaggle", "--file", str(path), "--timeout", "0") == EXIT_STAGE_ERROR
    line = next(x for x in capsys.readouterr().err.splitlines() if " ERROR " in x)
    assert "stale runs" in line and "bow_lr" in line and "MODEL=bow_lr" in line and "--allow-stale" in line
    assert not api.calls
    assert _stage("submit", "quora", "kaggle", "--file", str(path), "--timeout", "0", "--allow-stale") == 0
    assert api.calls


class _FakeApi:
    def __init__(self):
        from data_helpers import FakeKaggleApi

        self._api = FakeKaggleApi()
        self.calls = []

    def competition_submit(self, *a, **k):
        self.calls.append("competition_submit")
        return self._api.competition_submit(*a, **k)

    def competition_submissions(self, *a, **k):
        return self._api.competition_submissions(*a, **k)


# ---------------------------------------------------------------- missing test predictions
CERVIX_CLASSES = ["Type_1", "Type_2", "Type_3"]


@pytest.fixture
def cervix_runs_lacking_two_test_images(project):
    """Cervix runs whose test predictions lack two of the images the sample submission lists: what the
    pipeline gets when a test image is unreadable (the data stage excludes it, the features skip it) or
    when sample_submission_stg1.csv names an image that is not in test/."""
    from pipelines.common.cv import make_folds, run_cv
    from pipelines.common.io import write_csv

    rng = np.random.default_rng(3)
    y = np.repeat([0, 1, 2], [30, 50, 40])
    folds = make_folds(y, 3, seed=1)
    listed = [f"{i}.jpg" for i in range(12)]
    predicted = np.array([n for n in listed if n not in ("3.jpg", "7.jpg")], dtype=object)
    for name in ("cnn", "svm"):
        model = FixedModel(name, rng.dirichlet(np.ones(3), len(y)), rng.dirichlet(np.ones(3), len(predicted)))
        run_cv(model, comp="cervix", source="sample", out_dir=config.model_dir("cervix", "sample", name), y=y,
               folds=folds, train_ids=np.array([f"t{i}.jpg" for i in range(len(y))], dtype=object),
               test_ids=predicted, task="multiclass", class_names=CERVIX_CLASSES, seed=1)
    write_csv(config.raw_dir("cervix", "sample") / "sample_submission_stg1.csv",
              pd.DataFrame({"image_name": listed, **{c: 1 / 3 for c in CERVIX_CLASSES}}))
    return y


def test_missing_test_predictions_are_filled_with_the_train_prior_and_recorded(cervix_runs_lacking_two_test_images,
                                                                               capsys):
    from pipelines.common import provenance

    y = cervix_runs_lacking_two_test_images
    assert _stage("blend", "cervix", "sample", "--name", "filled") == 0  # was: exit 2, "lacks 2 of the 12 test ids"
    err = capsys.readouterr().err
    warning = next(x for x in err.splitlines() if " WARNING " in x and "no prediction" in x)
    assert "3.jpg" in warning and "7.jpg" in warning and "--strict" in warning
    path = config.submissions_dir("cervix") / "filled.csv"
    sub = pd.read_csv(path).set_index("image_name")
    prior = np.bincount(y) / len(y)
    assert len(sub) == 12
    for name in ("3.jpg", "7.jpg"):
        assert np.allclose(sub.loc[name, CERVIX_CLASSES].to_numpy(dtype=float), prior)
    record = read_json(provenance.record_path(path))
    assert record["filled_rows"]["count"] == 2 and record["filled_rows"]["ids"] == ["3.jpg", "7.jpg"]
    assert record["filled_rows"]["value"] == pytest.approx(dict(zip(CERVIX_CLASSES, prior)))


def test_strict_refuses_missing_test_predictions(cervix_runs_lacking_two_test_images, capsys):
    assert _stage("blend", "cervix", "sample", "--strict", "--name", "strict") == EXIT_STAGE_ERROR
    line = next(x for x in capsys.readouterr().err.splitlines() if " ERROR " in x)
    assert "2 test id(s) have no prediction" in line and "3.jpg" in line and "--strict" in line
    assert not (config.submissions_dir("cervix") / "strict.csv").exists()


# ---------------------------------------------------------------- archive limits
def _bomb_like_quora_zip(tmp_path):
    """A genuine-looking train.csv whose rows repeat one long question: it deflates several hundred fold."""
    from data_helpers import zip_bytes

    question = "why is this question asked so many times " * 60
    rows = "".join(f"{i},{2 * i},{2 * i + 1},{question},{question}?,{i % 2}\n" for i in range(2000))
    train = ("id,qid1,qid2,question1,question2,is_duplicate\n" + rows).encode()
    test = b"test_id,question1,question2\n0,a,b\n1,c,d\n"
    folder = tmp_path / "bomb"
    folder.mkdir()
    (folder / "quora-question-pairs.zip").write_bytes(zip_bytes({"train.csv": train, "test.csv": test}))
    return folder, len(train)


def test_a_high_ratio_zip_entry_is_refused_before_it_is_unpacked(project, tmp_path, capsys):
    import zipfile

    folder, size = _bomb_like_quora_zip(tmp_path)
    info = zipfile.ZipFile(folder / "quora-question-pairs.zip").getinfo("train.csv")
    assert info.file_size / info.compress_size > 100
    assert _stage("data", "quora", str(folder)) == EXIT_STAGE_ERROR
    line = next(x for x in capsys.readouterr().err.splitlines() if " ERROR " in x)
    assert "'train.csv'" in line and "ratio" in line and "--max-ratio" in line
    assert not config.source_dir("quora", str(folder)).exists()
    # the limit can be raised; the total can be capped
    assert _stage("data", "quora", str(folder), "--max-ratio", "100000") == 0
    assert _stage("data", "quora", str(folder), "--force", "--max-ratio", "100000", "--max-unpacked-gb",
                  str(size / 2 / 1024**3)) == EXIT_STAGE_ERROR
    line = next(x for x in capsys.readouterr().err.splitlines() if " ERROR " in x)
    assert "over the limit" in line and "--max-unpacked-gb" in line


# ---------------------------------------------------------------- the small messages
def _one_error(capsys) -> str:
    errors = [x for x in capsys.readouterr().err.splitlines() if " ERROR " in x]
    assert len(errors) == 1
    return errors[0]


def test_messages_name_the_users_path_not_the_temp_folder(project, tmp_path, capsys):
    folder = _quora_folder(tmp_path / "mine", seed=1)
    (folder / "train.csv").unlink()
    assert _stage("data", "quora", str(folder)) == EXIT_STAGE_ERROR
    line = _one_error(capsys)
    assert ".raw.tmp-" not in line and str(folder.resolve()) in line


def test_labels_written_as_floats_are_named(project, tmp_path, capsys):
    folder = _quora_folder(tmp_path / "floats", seed=1)
    train = pd.read_csv(folder / "train.csv", keep_default_na=False)
    train["is_duplicate"] = train["is_duplicate"].astype(float)
    train.to_csv(folder / "train.csv", index=False)
    assert "1.0" in (folder / "train.csv").read_text()
    assert _stage("data", "quora", str(folder)) == EXIT_STAGE_ERROR
    line = _one_error(capsys)
    assert "is_duplicate" in line and "line 2" in line and "1 and 0, not 1.0 and 0.0" in line and "[]" not in line


def test_a_single_class_train_file_is_named_not_a_fold_count(project, tmp_path, capsys):
    folder = _quora_folder(tmp_path / "one-class", seed=1)
    train = pd.read_csv(folder / "train.csv", keep_default_na=False)
    train.assign(is_duplicate=0).to_csv(folder / "train.csv", index=False)
    assert _stage("data", "quora", str(folder)) == EXIT_STAGE_ERROR
    line = _one_error(capsys)
    assert "is_duplicate=0" in line and "both" in line and "--n-folds" not in line


def test_features_on_a_single_class_do_not_suggest_fewer_folds(tmp_path):
    from pipelines.quora.features import step_folds

    np.save(tmp_path / "labels.npy", np.zeros(50, dtype=np.int8))
    with pytest.raises(StageError) as err:
        step_folds(tmp_path, {"n_folds": 5, "seed": 1})
    assert "only is_duplicate=0" in str(err.value) and "--n-folds" not in str(err.value)


def test_ctrl_c_in_a_keras_fit_ends_with_one_line(tmp_path):
    """What an interrupted fit leaves behind: a TensorFlow object whose collection logs an "Object was never
    used" dump; the interrupt must still end with the one clean line."""
    import subprocess
    import sys

    script = tmp_path / "interrupt.py"
    script.write_text('''
import sys, types
from pipelines import __main__ as cli

def add_arguments(parser):
    pass

def main(args):
    import tensorflow as tf
    from tensorflow.python.util import tf_should_use
    with tf.Graph().as_default():  # an op built but never run, as a fit interrupted while tracing leaves one
        half_built = tf_should_use._TFShouldUseHelper("TensorArray", "<half-built>", sys._getframe(), False, True)
    raise KeyboardInterrupt

stage = types.ModuleType("interrupted_stage")
stage.add_arguments, stage.main = add_arguments, main
sys.modules["interrupted_stage"] = stage
cli.STAGES["train"] = "interrupted_stage"
sys.exit(cli.main(["train", "--comp", "quora"]))
''')
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=config.ROOT)
    assert done.returncode == 130
    lines = [x for x in done.stderr.splitlines() if x.strip() and "oneDNN" not in x and "absl::InitializeLog" not in x]
    assert "Object was never used" not in done.stderr, done.stderr[-2000:]
    assert len(lines) == 1 and "interrupted" in lines[0]


# ---------------------------------------------------------------- a resumed Keras fit equals an uninterrupted one
def _max_weight_difference(a, b) -> float:
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a.get_weights(), b.get_weights()))


def test_a_resumed_cnn_fit_equals_an_uninterrupted_one(tmp_path):
    """Augmentation and Dropout draw from the layers' generators, the batches from the epoch's shuffle:
    both restored with the checkpoint, the resumed fold ends on the very same weights."""
    from cervix_helpers import tiny_images
    from pipelines.cervix.models import cnn

    x, y = tiny_images(n_per_class=8, size=32)
    rows = np.arange(len(y))
    train_idx, valid_idx = rows[rows % 4 != 0], rows[rows % 4 == 0]

    def net(epochs):
        opts = cnn.NetOptions(epochs=epochs, batch_size=8, tta=1, weights="none", augment="light", dropout=0.3,
                              width=8, patience=10, seed=3)
        return cnn.KerasImageModel("small_cnn", x, y, None, opts, 32, verbose=0, checkpoint_every_s=0)

    straight = net(3).fit(0, train_idx, valid_idx, tmp_path / "straight")
    net(1).fit(0, train_idx, valid_idx, tmp_path / "resumed")  # "interrupted" after epoch 1: save() never ran
    resumed_model = net(3)
    resumed = resumed_model.fit(0, train_idx, valid_idx, tmp_path / "resumed")
    assert len(resumed_model.history["loss"]) == 3
    assert _max_weight_difference(straight, resumed) == 0.0


@pytest.mark.parametrize("execution", ["eager", "graph"])
def test_a_resumed_siamese_fit_equals_an_uninterrupted_one(project, tmp_path, execution):
    from quora_model_helpers import interrupted_after_first_checkpoint, write_fake_features
    from pipelines.quora.models import QuoraFeatures, siamese

    data = QuoraFeatures(write_fake_features(config.features_dir("quora", "sample"), n_train=240, n_test=40,
                                             n_folds=2))
    train_idx, valid_idx = np.flatnonzero(data.folds != 0), np.flatnonzero(data.folds == 0)

    def model():
        return siamese.SiameseModel(data, "gru", epochs=3, units=4, dense=4, batch_size=32, patience=5,
                                    dropout=0.3, execution=execution, verbose=0, checkpoint_every_s=0)

    (tmp_path / "straight").mkdir()
    (tmp_path / "resumed").mkdir()
    straight = model().fit(0, train_idx, valid_idx, tmp_path / "straight")

    with interrupted_after_first_checkpoint(), pytest.raises(KeyboardInterrupt):
        model().fit(0, train_idx, valid_idx, tmp_path / "resumed")
    resumed = model().fit(0, train_idx, valid_idx, tmp_path / "resumed")
    assert resumed.resumed_from_epoch == 1
    assert _max_weight_difference(straight.model, resumed.model) == 0.0


def test_a_gzip_is_stopped_at_the_ratio_limit_while_it_streams(tmp_path):
    import gzip

    from pipelines.common import archives

    bomb = tmp_path / "train.csv.gz"
    bomb.write_bytes(gzip.compress(b"0" * (8 << 20)))  # 8 MB of one byte: a ratio near 1000
    out = tmp_path / "out"
    with pytest.raises(archives.ArchiveLimitError, match="train.csv.*ratio.*--max-ratio"):
        archives.extract(bomb, out)
    assert list(out.iterdir()) == []
    with archives.limits(max_ratio=10_000):
        assert archives.extract(bomb, out) == [Path("train.csv")]
    assert (out / "train.csv").stat().st_size == 8 << 20
