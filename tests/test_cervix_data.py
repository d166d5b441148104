"""Cervix: the synthetic images (schema, determinism, learnable classes, EXIF, broken files) and validation."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from conftest import SHARED_DATA
from data_helpers import folder_bytes, project  # noqa: F401
from pipelines.cervix import data as cervix
from pipelines.common.log import StageError


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    raw = tmp_path_factory.mktemp("cervix") / "raw"
    cervix.generate_sample(raw, n_per_class=12, n_test=8, seed=5, image_size=96)
    return raw


def test_layout_and_submission_schema(sample):
    for cls in cervix.CLASSES:
        assert len(list((sample / "train" / cls).glob("*.jpg"))) == 13  # 12 good + 1 broken
    assert sorted(p.name for p in (sample / "test").iterdir()) == sorted(f"{i}.jpg" for i in range(8))
    sub = pd.read_csv(sample / "sample_submission_stg1.csv")
    assert list(sub.columns) == ["image_name", "Type_1", "Type_2", "Type_3"]
    assert list(sub["image_name"]) == [f"{i}.jpg" for i in range(8)]
    assert np.allclose(sub[list(cervix.CLASSES)].sum(axis=1), 1.0) and np.allclose(sub["Type_1"], 1 / 3)
    names = [p.stem for p in (sample / "train").rglob("*.jpg")]
    assert len(names) == len(set(names))  # unique across classes, like Kaggle's train/


def test_same_seed_same_bytes(sample, tmp_path):
    cervix.generate_sample(tmp_path / "again", n_per_class=12, n_test=8, seed=5, image_size=96)
    assert folder_bytes(tmp_path / "again") == folder_bytes(sample)


def test_images_vary_in_size_and_some_carry_exif_orientation(tmp_path):
    cervix.generate_sample(tmp_path, n_per_class=20, n_test=1, seed=1, image_size=64)
    sizes, rotated = set(), 0
    for path in (tmp_path / "train").rglob("*.jpg"):
        if cervix.check_image(path):
            continue
        with Image.open(path) as im:
            orientation = im.getexif().get(cervix.EXIF_ORIENTATION)
            upright = ImageOps.exif_transpose(im)
            sizes.add(upright.size)
            if orientation in (6, 8):
                rotated += 1
                assert upright.size == (im.height, im.width)  # turned back by the tag
    assert len(sizes) > 20 and rotated >= 1


def test_classes_differ_in_colour_and_red_zone(tmp_path):
    """A crude hand feature (share of strongly red pixels) already orders the classes: a CNN can beat the prior."""
    cervix.generate_sample(tmp_path, n_per_class=15, n_test=1, seed=2, image_size=64)
    red_share = {}
    for cls in cervix.CLASSES:
        shares = []
        for path in (tmp_path / "train" / cls).glob("*.jpg"):
            if cervix.check_image(path):
                continue
            a = np.asarray(Image.open(path).convert("RGB"), dtype=float)
            shares.append(np.mean((a[..., 0] > 120) & (a[..., 1] < 90)))
        red_share[cls] = np.mean(shares)
    assert red_share["Type_1"] < red_share["Type_2"] < red_share["Type_3"]


def test_validate_excludes_and_lists_broken_images(sample):
    report = cervix.validate(sample)
    assert report["class_balance"] == {"Type_1": 12, "Type_2": 12, "Type_3": 12}
    assert report["counts"]["train_files"] == 39 and report["counts"]["test_images"] == 8
    reasons = report["excluded_reasons"]
    assert len(report["excluded"]) == 3 and set(report["excluded"]) == set(reasons)
    assert sorted(r.split(":")[0] for r in reasons.values()) == ["empty file", "not an image", "truncated or corrupt"]
    assert all(p.startswith("train/Type_") for p in report["excluded"])


def _copy(sample, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(sample, raw)
    return raw


def test_corrupt_test_image_is_excluded_not_a_crash(sample, tmp_path):
    raw = _copy(sample, tmp_path)
    data = (raw / "test" / "3.jpg").read_bytes()
    (raw / "test" / "3.jpg").write_bytes(data[: len(data) // 2])
    (raw / "test" / "4.jpg").write_bytes(b"")
    report = cervix.validate(raw)
    assert {"test/3.jpg", "test/4.jpg"} <= set(report["excluded"])
    assert report["counts"]["test_images"] == 6 and report["counts"]["test_files"] == 8


def test_missing_class_folder_names_it_and_the_fix(sample, tmp_path):
    raw = _copy(sample, tmp_path)
    shutil.rmtree(raw / "train" / "Type_2")
    with pytest.raises(StageError, match=r"train/Type_2 not found.*train\.7z"):
        cervix.validate(raw)


def test_missing_submission_column_and_duplicate_names(sample, tmp_path):
    raw = _copy(sample, tmp_path)
    sub = pd.read_csv(raw / "sample_submission_stg1.csv")
    sub.drop(columns=["Type_3"]).to_csv(raw / "sample_submission_stg1.csv", index=False)
    with pytest.raises(StageError, match=r"sample_submission_stg1\.csv: missing column\(s\) Type_3"):
        cervix.validate(raw)
    sub.loc[1, "image_name"] = "0.jpg"
    sub.to_csv(raw / "sample_submission_stg1.csv", index=False)
    with pytest.raises(StageError, match="duplicate image_name"):
        cervix.validate(raw)


def test_optional_folders_are_counted(sample, tmp_path):
    raw = _copy(sample, tmp_path)
    (raw / "additional" / "Type_1").mkdir(parents=True)
    shutil.copy(next((raw / "test").glob("*.jpg")), raw / "additional" / "Type_1" / "9000.jpg")
    (raw / "test" / "notes.txt").write_text("x")
    report = cervix.validate(raw)
    assert report["counts"]["additional_images"] == 1
    assert report["class_balance_additional"] == {"Type_1": 1, "Type_2": 0, "Type_3": 0}
    assert any("non-.jpg" in w for w in report["warnings"])


@pytest.mark.realdata
def test_import_of_the_real_cervix_files(project):
    from pipelines.common.acquire import acquire

    src = SHARED_DATA / "cervix"
    if not (src / "train").is_dir():
        pytest.skip(f"real data not available at {src}")
    manifest = acquire("cervix", str(src))
    assert manifest["class_balance"] == {"Type_1": 250, "Type_2": 781, "Type_3": 450}
    assert manifest["counts"]["train_images"] == 1481 and manifest["counts"]["test_images"] == 512
    assert manifest["counts"]["sample_submission_rows"] == 512
    assert "MANIFEST.sha256" not in manifest["files"]  # not competition data
    assert manifest["checksums"]["verified"] == 1993 and not manifest["checksums"]["mismatched"]
