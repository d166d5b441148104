"""Cervix experiments without pretrained weights: seed bagging of the from-scratch network and the blends (issue 13).

    python -m benchmarks cervix_experiments [--root=DIR] [--data=../shared/data/cervix] [--seeds=42,43,44]
                                            [--model=small_cnn] [--reuse]

In a project root of its own (``--root``, default ``/tmp/bench-cervix-experiments``; PIPELINES_ROOT of the stage
processes) it imports the 1,481 real labelled images (``benchmarks.shared.SHARED_DATA/cervix``), builds their
tensors, trains ``bow_svm`` and ``--model`` over ``--seeds`` (a run per seed and their bag), then blends by the
automatic method (both fitted, the better used): (a) bow_svm with the network's default-seed run (what the
pipeline's default blend without pretrained weights is), (b) bow_svm with the bag, (c) every run. Each stage is
the pipeline's own command; finished runs are kept (``--reuse`` only re-reports what the root holds). Writes
BENCHMARKS.md section ``cervix-experiments``: every run's 5-fold CV log loss and fit time, the bag against its
seeds, the blends against the figure of the pipeline's default blend without pretrained weights.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import machine, update_section
from benchmarks.shared import SHARED_DATA

BASELINE = 0.844  # BENCHMARKS "cervix": bow_svm + small_cnn, the default blend without pretrained weights


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks cervix_experiments")
    p.add_argument("--root", default="/tmp/bench-cervix-experiments")
    p.add_argument("--data", default=str(SHARED_DATA / "cervix"))
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--reuse", action="store_true", help="only re-report the runs the root holds")
    return p.parse_args(argv)


def stage(root: Path, *argv: str) -> float:
    env = {**os.environ, "PIPELINES_ROOT": str(root)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines", *argv], check=True, env=env)
    return time.perf_counter() - t0


def read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    root = Path(args.root)
    src = ["--comp", "cervix", "--source", args.data]
    walls = read(root / "bench-cervix-walls.json")
    load_before = os.getloadavg()[0]
    if not args.reuse:
        root.mkdir(parents=True, exist_ok=True)
        stage(root, "data", *src)
        stage(root, "features", *src)
        walls["bow_svm"] = stage(root, "train", *src, "--model", "bow_svm")
        walls[f"{args.model} seeds + bag"] = stage(root, "train", *src, "--model", args.model, "--seeds", args.seeds)
        (root / "bench-cervix-walls.json").write_text(json.dumps(walls))
    models = next((root / "models" / "cervix").glob("local-*"), None)
    if models is None:
        raise SystemExit(f"no cervix runs under {root}/models/cervix: run without --reuse first")
    runs = {f"{m.name}/{r.name}": r for m in sorted(models.iterdir()) if m.is_dir() and m.name != "blend"
            and not m.name.startswith(".") for r in sorted(m.iterdir()) if (r / "metrics.json").exists()}
    net = {k: r for k, r in runs.items() if k.startswith(args.model + "/")}
    bag = next((k for k in net if "/bag-" in k), None)
    default_seed = next((k for k in net if k.split("/")[1].startswith("default-")), None)
    blends = {}
    for label, pattern in (("bow_svm + the network's default-seed run", f"bow_svm,{default_seed}"),
                           ("bow_svm + the network's bag", f"bow_svm,{bag}"), ("every run", None)):
        if pattern and "None" in pattern:
            continue
        stage(root, "blend", *src, "--no-submission", "--force", *(["--runs", pattern] if pattern else []))
        blends[label] = read(models / "blend" / "metrics.json")
    load_after = os.getloadavg()[0]

    lines = [f"5-fold CV on the real labelled images (`{args.data}`), no pretrained weights. Machine: {machine()}; "
             f"1-minute load average {load_before:.1f} before, {load_after:.1f} after (other jobs ran beside it, so "
             "the times are indicative).", "",
             "| run | CV log loss | accuracy | fit min |", "|---|---:|---:|---:|"]
    for key, folder in runs.items():
        m = read(folder / "metrics.json")
        lines.append(f"| {key} | {m['log_loss']:.4f} | {m.get('accuracy', float('nan')):.3f} | "
                     f"{m.get('fit_seconds', 0.0) / 60:.1f} |")
    lines.append("")
    if bag:
        members = read(runs[bag] / "metrics.json").get("members", {})
        lines.append(f"- {args.model}: the bag of {len(members)} seeds {read(runs[bag] / 'metrics.json')['log_loss']:.4f}"
                     f" against its seeds {', '.join(f'{v:.4f}' for v in members.values())} (mean "
                     f"{sum(members.values()) / len(members):.4f}); the seeds and the bag took "
                     f"{walls.get(f'{args.model} seeds + bag', float('nan')) / 60:.0f} min")
    for label, m in blends.items():
        if m:
            methods = ", ".join(f"{k} {v:.4f}" for k, v in (m.get("methods") or {}).items())
            lines.append(f"- blend of {label} ({len(m.get('models', {}))} runs): **{m['log_loss']:.4f}** by "
                         f"{m.get('method')} ({methods}); against {BASELINE} (the default blend without pretrained "
                         f"weights, section cervix): {m['log_loss'] - BASELINE:+.4f}")
    command = "python -m benchmarks cervix_experiments " + " ".join(a for a in argv if a != "--reuse")
    path = update_section("cervix-experiments", "\n".join(lines), command.strip())
    print("\n".join(lines))
    print(f"written to {path}")
    return 0
