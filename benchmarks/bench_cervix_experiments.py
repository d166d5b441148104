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
from pathlib import Path

from benchmarks.shared import SHARED_DATA, bag_line, blend_line, read_json_or_empty as read, stage_in as stage, write_report

BASELINE = 0.844  # BENCHMARKS "cervix": bow_svm + small_cnn, the default blend without pretrained weights


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks cervix_experiments")
    p.add_argument("--root", default="/tmp/bench-cervix-experiments")
    p.add_argument("--data", default=str(SHARED_DATA / "cervix"))
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--reuse", action="store_true", help="only re-report the runs the root holds")
    return p.parse_args(argv)


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

    lines = [f"5-fold CV on the real labelled images (`{args.data}`), no pretrained weights. "
             f"1-minute load average {load_before:.1f} before, {load_after:.1f} after (other jobs ran beside it, so "
             "the times are indicative).", "",
             "| run | CV log loss | accuracy | fit min |", "|---|---:|---:|---:|"]
    for key, folder in runs.items():
        m = read(folder / "metrics.json")
        lines.append(f"| {key} | {m['log_loss']:.4f} | {m.get('accuracy', float('nan')):.3f} | "
                     f"{m.get('fit_seconds', 0.0) / 60:.1f} |")
    lines.append("")
    if bag:
        lines.append(bag_line(args.model, read(runs[bag] / "metrics.json"),
                              walls.get(f"{args.model} seeds + bag", float("nan"))))
    for label, m in blends.items():
        if m:
            lines.append(blend_line(label, m, f"against {BASELINE} (the default blend without pretrained weights, "
                                              f"section cervix): {m['log_loss'] - BASELINE:+.4f}"))
    command = "python -m benchmarks cervix_experiments " + " ".join(a for a in argv if a != "--reuse")
    return write_report("cervix-experiments", lines, command)
