"""One writer per output folder (pipelines/common/locks.py): a second process on a folder being written stops
at once with the holder named; different folders are written side by side; a dead holder leaves no lock."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pipelines import config
from pipelines.__main__ import EXIT_STAGE_ERROR, main
from pipelines.common.locks import output_lock
from pipelines.common.log import StageError

HOLD = """
import sys, time
from pathlib import Path
from pipelines import config
from pipelines.common.locks import output_lock
config.LOCKS_DIR = Path(sys.argv[1])
with output_lock(Path(sys.argv[2]), "test holder"):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def holder():
    """Start a process holding the lock of a folder; yields (start(folder) -> process)."""
    procs = []

    def start(folder):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(config.LOCKS_DIR), str(folder)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_process_on_a_locked_run_stops_at_once_naming_the_holder(project_dirs, holder, capsys):
    from quora_model_helpers import write_fake_features

    write_fake_features(config.features_dir("quora", "sample"))
    run = config.model_dir("quora", "sample", "bow_lr/held")  # the run `--run held` of bow_lr
    proc = holder(run)
    started = time.perf_counter()
    assert main(["train", "--comp", "quora", "--source", "sample", "--model", "bow_lr", "--run", "held"]) \
        == EXIT_STAGE_ERROR
    assert time.perf_counter() - started < 30  # at once: no wait for the holder
    err = capsys.readouterr().err
    assert f"is being written by PID {proc.pid}" in err and "bow_lr/held" in err and "test holder" not in err
    assert not (run / "folds").exists()  # nothing of it was written
    # another model of the same source trains meanwhile
    assert main(["train", "--comp", "quora", "--source", "sample", "--model", "bow_svm"]) == 0
    proc.kill()
    proc.wait()
    # the holder died: its lock went with it
    assert main(["train", "--comp", "quora", "--source", "sample", "--model", "bow_lr", "--run", "held"]) == 0
    assert (run / "oof.parquet").is_file()


def test_the_data_stage_locks_its_folder(project_dirs, holder, capsys):
    proc = holder(config.source_dir("quora", "sample"))
    assert main(["data", "--comp", "quora", "--source", "sample", "--n-train", "300", "--n-test", "100"]) \
        == EXIT_STAGE_ERROR
    assert f"PID {proc.pid}" in capsys.readouterr().err
    assert not config.raw_dir("quora", "sample").exists()


def test_nested_holds_in_one_process(project_dirs, tmp_path):
    folder = tmp_path / "out"
    with output_lock(folder):
        with output_lock(folder):
            pass
        with pytest.raises(StageError, match="being written"):  # another process is refused meanwhile
            out = subprocess.run([sys.executable, "-c", HOLD, str(config.LOCKS_DIR), str(folder)],
                                 capture_output=True, text=True, timeout=60)
            raise StageError(out.stderr.strip().splitlines()[-1])


TRAIN = """
import sys
from pathlib import Path
from pipelines import config
for name in ("DATA_DIR", "MODELS_DIR", "SUBMISSIONS_DIR", "REPORTS_DIR", "LOCKS_DIR"):
    setattr(config, name, Path(sys.argv[1]) / name.lower().replace("_dir", ""))
from pipelines.__main__ import main
sys.exit(main(["train", "--comp", "quora", "--source", "sample", *sys.argv[2:]]))
"""


def test_two_runs_trained_at_the_same_time_equal_the_runs_trained_alone(project_dirs):
    from quora_model_helpers import write_fake_features

    write_fake_features(config.features_dir("quora", "sample"))
    runs = {"bow_lr/lr-a": ["--model", "bow_lr", "--run", "lr-a", "--bow-C", "0.3"],
            "lgbm/lgbm-b": ["--model", "lgbm", "--run", "lgbm-b", "--lgbm-rounds", "30", "--lgbm-early-stopping", "0"]}
    procs = [subprocess.Popen([sys.executable, "-c", TRAIN, str(project_dirs), *argv], stderr=subprocess.DEVNULL)
             for argv in runs.values()]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    together = {r: (config.model_dir("quora", "sample", r) / "oof.parquet").read_bytes() for r in runs}
    for run, argv in runs.items():
        assert main(["train", "--comp", "quora", "--source", "sample", *argv, "--force"]) == 0  # alone
        assert (config.model_dir("quora", "sample", run) / "oof.parquet").read_bytes() == together[run]
