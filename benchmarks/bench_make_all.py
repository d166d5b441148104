"""`make all` end to end on the built-in sample (both competitions), from an empty data/ and models/
for the sample source: wall time per stage and in all, and the peak RSS of the stage processes."""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time

from benchmarks.report import update_section
from benchmarks.shared import use_shared_weights
from pipelines import competitions, config

STAGES = ("data", "features", "train", "blend", "compare")


def run_stage(stage: str, comp: str) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "pipelines", stage, "--comp", comp, "--source", "sample"]
    if stage == "train":
        cmd += ["--model", "all"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=config.ROOT)
    wall = time.perf_counter() - t0
    # ru_maxrss of children is the max over all waited-for children so far: report it per stage when it grew.
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(after, before) / 1024.0


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks make_all")
    p.add_argument("--keep", action="store_true", help="do not delete the sample's data and models first")
    args = p.parse_args(argv)
    use_shared_weights()  # inherited by the stage processes: cervix MODEL=all adds mobilenet_v2 with local weights
    if not args.keep:
        for comp in competitions.names():
            for d in (config.source_dir(comp, "sample"), config.models_dir(comp, "sample")):
                shutil.rmtree(d, ignore_errors=True)
    rows, total = [], 0.0
    load_before = os.getloadavg()[0]
    for comp in competitions.names():
        for stage in STAGES:
            wall, rss = run_stage(stage, comp)
            total += wall
            rows.append(f"| {comp} | {stage} | {wall:.1f} | {rss:.0f} |")
    load_after = os.getloadavg()[0]
    from pipelines.common import runs

    cervix_models = ", ".join(k for k in runs.run_folders(config.models_dir("cervix", "sample")) if k != "blend")
    verdict = "**met**" if total <= 15 * 60 else "**not met**"
    body = ("From an empty `data/<comp>/sample` and `models/<comp>/sample` (the same stage commands `make all` "
            "runs).\n\n| competition | stage | wall s | peak RSS so far, MB |\n|---|---|---:|---:|\n"
            + "\n".join(rows) + f"\n| **all** | | **{total:.1f}** ({total / 60:.1f} min) | |\n\n"
            f"Target (issue 6): ≤ 15 minutes on 2 cores: {verdict}. Cervix `train` ran `MODEL=all`: "
            f"{cervix_models}. 1-minute load average {load_before:.2f} before, {load_after:.2f} after.")
    update_section("make-all", body, "python -m benchmarks make_all   # or: make bench BENCH=make_all")
    print(f"make all (stage commands): {total:.1f} s")
