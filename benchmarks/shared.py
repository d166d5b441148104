"""Where the benchmarks find the real data and the ImageNet weight files (never in the repository).

``SHARED_DATA`` / ``SHARED_WEIGHTS``: the environment variables of those names, else ``../shared/data``
and ``../shared/weights`` beside the repository. The pipeline itself knows nothing of them: a benchmark
that trains pretrained networks calls ``use_shared_weights()``, which points the pipeline's
``PIPELINES_WEIGHTS_DIR`` (``config.WEIGHTS_DIR``) at the shared weights unless the user set it.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
SHARED_WEIGHTS = Path(os.environ.get("SHARED_WEIGHTS") or REPO_ROOT.parent / "shared" / "weights")


def use_shared_weights() -> Path | None:
    """The weights folder the pipeline will use: ``PIPELINES_WEIGHTS_DIR`` when set, else the shared one
    (set in this process's environment, for stage subprocesses too, and in ``config.WEIGHTS_DIR``)."""
    from pipelines import config

    if not os.environ.get("PIPELINES_WEIGHTS_DIR"):
        os.environ["PIPELINES_WEIGHTS_DIR"] = str(SHARED_WEIGHTS)
        config.WEIGHTS_DIR = SHARED_WEIGHTS
    return config.WEIGHTS_DIR


def latest_run(comp: str, source: str, model: str) -> tuple[str, Path]:
    """(key, folder) of the model's most recently finished run (the one a stage command just trained)."""
    from pipelines.common import runs

    found = [(k, p) for k, p in runs.runs_of(comp, source, model).items() if (p / "metrics.json").exists()]
    if not found:
        raise SystemExit(f"no finished run of {model} under models/{comp}/{source}")
    return max(found, key=lambda kp: (kp[1] / "metrics.json").stat().st_mtime_ns)


def stage_in(root: Path, *argv: str) -> float:
    """Run ``python -m pipelines <argv>`` with PIPELINES_ROOT=root (a project root of the benchmark's own); its
    wall seconds."""
    import subprocess
    import sys
    import time

    env = {**os.environ, "PIPELINES_ROOT": str(root)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines", *argv], check=True, env=env)
    return time.perf_counter() - t0


def quora_features(source: str) -> str:
    """The label of a Quora source (a folder of real rows), after the data and features stages when its features
    are not built yet (outputs under PIPELINES_ROOT when set)."""
    from pipelines import config
    from pipelines.__main__ import main as cli

    label = config.source_label(source)
    if not (config.features_dir("quora", label) / "features.lock.json").exists():
        assert cli(["data", "--comp", "quora", "--source", source]) == 0
        assert cli(["features", "--comp", "quora", "--source", label]) == 0
    return label


def read_json_or_empty(path: Path) -> dict:
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def blend_line(label: str, metrics: dict, verdict: str) -> str:
    """One report line for a blend's metrics.json: its runs, score, method, both methods' scores, ``verdict``."""
    methods = ", ".join(f"{k} {v:.4f}" for k, v in (metrics.get("methods") or {}).items())
    return (f"- blend of {label} ({len(metrics.get('models', {}))} runs): **{metrics['log_loss']:.4f}** by "
            f"{metrics.get('method')} ({methods}); {verdict}")


def write_report(section: str, lines: list[str], command: str) -> int:
    """BENCHMARKS.md section ``section`` from ``lines``, printed too."""
    from benchmarks.report import update_section

    path = update_section(section, "\n".join(lines), command.strip())
    print("\n".join(lines))
    print(f"written to {path}")
    return 0


def bag_line(model: str, metrics: dict, wall_s: float) -> str:
    """One report line for a bag's metrics.json: its score against its members' and the wall time of it all."""
    members = metrics.get("members", {})
    return (f"- {model}: the bag of {len(members)} seeds {metrics['log_loss']:.4f} against its seeds "
            f"{', '.join(f'{v:.4f}' for v in members.values())} (mean {sum(members.values()) / len(members):.4f}); "
            f"the seeds and the bag took {wall_s / 60:.0f} min")


RESULT_TAG = "BENCH_RESULT "  # a child process's result line: the tag, then JSON


def print_result(result: dict) -> None:
    """A child process's result, as the line ``child_result`` reads."""
    import json

    print(RESULT_TAG + json.dumps(result), flush=True)


def child_result(cmd: list[str], what: str) -> dict:
    """Run the child process ``cmd`` (from the repository root) and return its last result line; a failure or a
    missing line is a RuntimeError naming ``what``."""
    import json
    import subprocess

    proc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}")
    return json.loads(lines[-1][len(RESULT_TAG):])
