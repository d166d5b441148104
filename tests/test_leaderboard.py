"""CV against the leaderboard: the score `make submit` reads back (fake Kaggle API) shows in `make compare`
beside the CV score of the blend the submission was made from; two or more draw the CV-vs-LB plot."""
from __future__ import annotations

import pandas as pd
import pytest

from data_helpers import FakeKaggleApi
from pipelines import config
from pipelines.common import compare, kaggle_io, leaderboard, provenance
from pipelines.common.io import read_json, write_json

from compare_helpers import FakeProjects, point_config, set_finished

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SOURCE = "kaggle"  # Kaggle scores no sample submission


@pytest.fixture(scope="module")
def fake_projects(tmp_path_factory):
    return FakeProjects(tmp_path_factory)


@pytest.fixture
def project(tmp_path, monkeypatch, fake_projects):
    """Fake quora runs and their blend, trained on source 'kaggle', in a project of the test's own."""
    point_config(monkeypatch, tmp_path)
    built = fake_projects.copy_into(tmp_path, "quora", source=SOURCE)
    from pipelines.common import submission

    monkeypatch.setattr(submission, "validate_submission_file", lambda comp, file, source: None)
    return built


def blend_dir():
    return config.model_dir("quora", SOURCE, "blend")


def blend_cv() -> float:
    return read_json(blend_dir() / "metrics.json")["log_loss"]


def write_submission(name: str, value: float):
    """A CSV and its record as `make blend` writes them (pipelines.common.blend.write_blend_submission)."""
    path = config.submissions_dir("quora") / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"test_id": range(10), "is_duplicate": [value] * 10}).to_csv(path, index=False)
    members = {m: config.model_dir("quora", SOURCE, m) for m in ("strong", "weak", "nn")}
    provenance.write_record(
        path, "quora", SOURCE, runs={m: provenance.run_entry(d) for m, d in members.items()},
        blend={"path": provenance.run_entry(blend_dir())["path"], "method": "weights",
               "finished": read_json(blend_dir() / "run.json")["finished"]})
    return path


def submit(path, score: str, message: str = "m"):
    return kaggle_io.submit("quora", path, message, api=FakeKaggleApi(scores=[("complete", score)]), source=SOURCE,
                            sleep=lambda s: None)


def test_the_record_keeps_the_blends_cv_score_from_blend_time(project):
    record = read_json(provenance.record_path(write_submission("sub1", 0.3)))
    metrics = read_json(blend_dir() / "metrics.json")
    assert record["blend"]["log_loss"] == metrics["log_loss"]
    assert record["blend"]["accuracy"] == metrics["accuracy"] and record["blend"]["auc"] == metrics["auc"]
    assert record["blend"]["run"] == "blend" and record["blend"]["method"] == "weights"


def test_a_read_back_score_shows_in_compare_beside_the_blends_cv(project, capsys):
    path = write_submission("sub1", 0.3)
    submit(path, "0.43210", "first")
    report = compare.compare("quora", SOURCE, None)
    [row] = report["leaderboard"]
    assert row["submission"] == "sub1" and row["file"] == "sub1.csv"
    assert row["public_score"] == pytest.approx(0.4321)
    assert row["cv_log_loss"] == blend_cv() and row["cv_from"] == "record"
    assert row["lb_minus_cv"] == pytest.approx(0.4321 - blend_cv())
    assert row["blend"] == "blend" and row["method"] == "weights" and row["read_back"]
    out = config.reports_dir("quora", SOURCE)
    md = (out / "comparison.md").read_text()
    section = md[md.index("## CV vs leaderboard"):]
    assert f"| sub1 | blend (weights) | {blend_cv():.5f} | 0.43210 | {0.4321 - blend_cv():+.5f} | — |" in section
    assert read_json(out / "comparison.json")["leaderboard"][0]["public_score"] == pytest.approx(0.4321)
    assert "cv_vs_lb.png" not in report["figures"]  # one point is no plot
    assert "CV vs leaderboard:" in compare.render_text(report)

    # a second scored submission: the plot, one labelled point per submission
    submit(write_submission("sub2", 0.4), "0.5")
    report = compare.compare("quora", SOURCE, None)
    assert [r["submission"] for r in report["leaderboard"]] == ["sub1", "sub2"]
    assert report["figures"][-2:] == ["cv_vs_lb.png", "learning_curve_nn.png"]
    assert (out / "cv_vs_lb.png").read_bytes().startswith(PNG_MAGIC)
    assert "![cv_vs_lb](cv_vs_lb.png)" in (out / "comparison.md").read_text()

    # the submissions gone: so is the plot
    for p in config.submissions_dir("quora").glob("sub2*"):
        p.unlink()
    report = compare.compare("quora", SOURCE, None)
    assert len(report["leaderboard"]) == 1 and not (out / "cv_vs_lb.png").exists()


def test_a_blend_re_run_after_the_submission_does_not_change_its_cv_score(project):
    path = write_submission("sub1", 0.3)
    recorded = blend_cv()
    submit(path, "0.4")
    metrics = read_json(blend_dir() / "metrics.json")
    metrics["log_loss"] = 0.05  # the blend re-fitted since on other runs
    write_json(blend_dir() / "metrics.json", metrics)
    [row] = compare.compare("quora", SOURCE, None, with_figures=False)["leaderboard"]
    assert row["cv_log_loss"] == recorded


def test_an_older_record_reads_the_cv_score_from_the_same_blend_run_only(project):
    path = write_submission("sub1", 0.3)
    submit(path, "0.4")
    rec_path = provenance.record_path(path)
    record = read_json(rec_path)
    del record["blend"]["log_loss"]  # a record written before the blend's scores were kept
    write_json(rec_path, record)
    [row] = compare.compare("quora", SOURCE, None, with_figures=False)["leaderboard"]
    assert row["cv_log_loss"] == blend_cv() and row["cv_from"] == "blend run"

    set_finished(blend_dir(), "2099-01-01T00:00:00+00:00")  # the blend re-run since: not the submission's
    report = compare.compare("quora", SOURCE, None, with_figures=False)
    [row] = report["leaderboard"]
    assert row["cv_log_loss"] is None and row["lb_minus_cv"] is None
    assert "| sub1 | blend (weights) | — (the blend was re-run since) | 0.40000 |" in \
        (config.reports_dir("quora", SOURCE) / "comparison.md").read_text()


def test_only_scored_submissions_of_this_source_are_shown(project):
    unscored = write_submission("pending", 0.2)
    kaggle_io.submit("quora", unscored, "m", api=FakeKaggleApi(scores=[("pending", "")]), source=SOURCE, timeout=0.0,
                     sleep=lambda s: None)
    other = write_submission("other_source", 0.25)
    submit(other, "0.4")
    record = read_json(provenance.record_path(other))
    record["source"] = "local-elsewhere"
    write_json(provenance.record_path(other), record)
    assert leaderboard.submission_rows("quora", SOURCE) == []
    md = (config.reports_dir("quora", SOURCE) / "comparison.md")
    compare.compare("quora", SOURCE, None, with_figures=False)
    assert "No submission of quora (kaggle) has a public score yet" in md.read_text()


def test_a_submission_scored_before_records_held_the_score_is_read_from_its_result(project):
    path = write_submission("old", 0.3)
    write_json(config.submissions_dir("quora") / "old.kaggle.json",  # what `make submit` wrote before
               {"file": str(path), "public_score": 0.41, "private_score": 0.42, "ref": 7, "message": "m",
                "submitted": "2026-01-01T00:00:00+0000", "status": "complete"})
    [row] = leaderboard.submission_rows("quora", SOURCE)
    assert row["public_score"] == 0.41 and row["private_score"] == 0.42 and row["cv_log_loss"] == blend_cv()
    assert row["read_back"] is None and row["submitted"] == "2026-01-01T00:00:00+0000"


def test_a_csv_uploaded_from_another_folder_is_found_through_its_result(project, tmp_path):
    path = write_submission("moved", 0.3)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / path.name
    path.rename(moved)
    provenance.record_path(path).rename(provenance.record_path(moved))
    submit(moved, "0.45")
    [row] = leaderboard.submission_rows("quora", SOURCE)
    assert row["public_score"] == pytest.approx(0.45) and row["record"] == str(provenance.record_path(moved))


def test_the_sample_report_has_no_leaderboard_section(tmp_path, monkeypatch, fake_projects):
    point_config(monkeypatch, tmp_path)
    fake_projects.copy_into(tmp_path, "quora")
    report = compare.compare("quora", "sample", None, with_figures=False)
    assert report["leaderboard"] == []
    assert "CV vs leaderboard" not in (config.reports_dir("quora", "sample") / "comparison.md").read_text()
