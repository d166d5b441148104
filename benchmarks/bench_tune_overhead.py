"""What tuning costs beyond the runs it makes (issue 13), on the real Quora rows.

    python -m benchmarks tune_overhead [--root=DIR] [--data=../shared/data/quora] [--models=bow_lr,lgbm]
                                       [--repeats=4] [--worker-trials=12] [--worker-model=bow_lr]

In a project root of its own (``--root``, default ``/tmp/bench-tune-overhead``; PIPELINES_ROOT of this process and
of the stage processes it starts) with the real pairs' features:

1. **A trial against a plain run of the same parameters**, in one process, alternating which goes first. The plain
   run is the train stage's ``train_model`` with ``--force`` (every fold fitted); the trial is the path ``tune``
   takes for one trial: its creation under the study's file lock (dead-trial check, ask), the heartbeat thread,
   the run with a report and a pruning check after every fold, and ``tell`` into the SQLite study. The trial's
   parameters are enqueued, so both sides fit the same model: the defaults, then draws from the model's search
   space. Median wall seconds per side and the ratio.
2. **Two tuning workers on one SQLite study against one worker**: ``python -m pipelines tune`` processes, each
   study ``--worker-trials`` trials of ``--worker-model``; trials per hour from the study's own trial times (first
   start to last finish, so the process start and the final best run are not counted).

Writes BENCHMARKS.md section ``tune-overhead``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import update_section
from benchmarks.shared import SHARED_DATA

TARGET_OVERHEAD = 0.05


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks tune_overhead")
    p.add_argument("--root", default=os.environ.get("PIPELINES_ROOT") or "/tmp/bench-tune-overhead")
    p.add_argument("--data", default=str(SHARED_DATA / "quora"))
    p.add_argument("--models", default="bow_lr,lgbm")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--worker-trials", type=int, default=12)
    p.add_argument("--worker-model", default="bow_lr")
    return p.parse_args(argv)


def stage(*argv: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines", *argv], check=True, env=os.environ.copy())
    return time.perf_counter() - t0


def parameter_sets(comp, source: str, spec, dists: dict, n: int, seed: int = 0) -> list[dict]:
    """The defaults of the searched options, then ``n - 1`` random draws from their distributions."""
    import optuna

    from pipelines import config
    from pipelines.common.models import resolve_options

    resolved = resolve_options(spec, {}, comp.profile(config.source_label(source), spec.name))
    # an option whose default None means "chosen from the data" (lgbm's min_data_in_leaf: 0.1% of the train rows,
    # at least 20, which is 20 on these rows) is given its space's lower bound, the value it takes here
    defaults = {name: getattr(resolved, name) if getattr(resolved, name) is not None else dists[name].low
                for name in dists}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    draws = []
    for _ in range(n - 1):
        trial = study.ask(fixed_distributions=dists)
        draws.append(dict(trial.params))
        study.tell(trial, 0.0)
    return [defaults, *draws]


def trial_vs_plain(comp_name: str, source: str, model: str, repeats: int) -> dict:
    import optuna

    from pipelines import competitions
    from pipelines.common import train, tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    comp = competitions.get(comp_name)
    args = train.parse_args(comp_name, ["--source", source, "--model", model])
    spec, dists = tune.model_space(comp, model, args)
    targs = argparse.Namespace(**{**vars(args), "study": f"overhead-{model}-{int(time.time())}", "storage": None,
                                  "trials": 10 ** 6, "timeout": None})
    study, study_name, url, storage = tune.load_study(targs, model)
    plain_args = argparse.Namespace(**{**vars(args), "no_resume": True})
    sides = {"plain": [], "trial": []}
    params_used = []
    for i, params in enumerate(parameter_sets(comp, source, spec, dists, repeats)):
        params_used.append(params)
        for side in (("plain", "trial") if i % 2 == 0 else ("trial", "plain")):
            t0 = time.perf_counter()
            if side == "plain":
                result = train.train_model(comp, model, plain_args, run=f"overhead-plain-{i}", overrides=params)
                assert result.get("complete"), result
            else:
                study.enqueue_trial(params)
                trial = tune.next_trial(study, dists, targs.trials, url)
                assert trial.params == params, (trial.params, params)
                with tune.heartbeat(storage, trial):
                    value = tune.run_trial(comp, spec, targs, study_name, trial)
                study.tell(trial, value)
            sides[side].append(time.perf_counter() - t0)
    import numpy as np

    plain, trial = (float(np.median(sides[s])) for s in ("plain", "trial"))
    ratios = [t / p - 1.0 for p, t in zip(sides["plain"], sides["trial"])]
    return {"model": model, "plain": sides["plain"], "trial": sides["trial"], "plain_median": plain,
            "trial_median": trial, "overhead": float(np.median(ratios)), "total_overhead": sum(sides["trial"]) /
            sum(sides["plain"]) - 1.0, "params": params_used}


def trials_per_hour(study_name: str, url: str) -> dict:
    import optuna

    study = optuna.load_study(study_name=study_name, storage=url)
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    start = min(t.datetime_start for t in done)
    end = max(t.datetime_complete for t in done)
    hours = (end - start).total_seconds() / 3600
    return {"trials": len(done), "pruned": sum(t.state.name == "PRUNED" for t in done),
            "numbers": sorted(t.number for t in done), "seconds": hours * 3600, "per_hour": len(done) / hours}


def workers(source: str, model: str, n_trials: int) -> dict:
    from pipelines.common import tune

    out = {}
    for n_workers in (1, 2):
        study = f"workers{n_workers}-{model}-{int(time.time())}"
        cmd = [sys.executable, "-m", "pipelines", "tune", "--comp", "quora", "--source", source, "--model", model,
               "--trials", str(n_trials), "--study", study]
        t0 = time.perf_counter()
        procs = [subprocess.Popen(cmd, env=os.environ.copy()) for _ in range(n_workers)]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - t0
        if any(codes):
            raise SystemExit(f"tune workers exited {codes}")
        stats = trials_per_hour(study, tune.default_storage("quora", source, study, model))
        out[n_workers] = {**stats, "process_wall": wall}
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    os.environ["PIPELINES_ROOT"] = str(root)
    from pipelines import config  # PIPELINES_ROOT is read at import

    if config.ROOT.resolve() != root.resolve():
        raise SystemExit(f"run with PIPELINES_ROOT={root} set (the pipeline was imported with {config.ROOT})")
    src = ["--comp", "quora", "--source", args.data]
    stage("data", *src)
    stage("features", *src)
    load_before = os.getloadavg()[0]
    overhead = [trial_vs_plain("quora", args.data, m, args.repeats) for m in args.models.split(",") if m]
    by_workers = workers(args.data, args.worker_model, args.worker_trials)
    load_after = os.getloadavg()[0]

    lines = [f"Real pairs: `{args.data}` (5 folds); 1-minute load average {load_before:.1f} before, {load_after:.1f} "
             "after (the benchmark's own two workers at the end).", "",
             "**A trial against a plain run of the same parameters** (one process, alternating order; the trial is "
             "tune's own path: creation under the study's file lock, heartbeat, per-fold report and pruning check, "
             "tell into SQLite; parameters enqueued so both sides fit the same model):", "",
             "| model | parameters | plain run s | trial s | overhead |", "|---|---|---:|---:|---:|"]
    for o in overhead:
        for params, plain, trial in zip(o["params"], o["plain"], o["trial"]):
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
            lines.append(f"| {o['model']} | {shown} | {plain:.1f} | {trial:.1f} | {trial / plain - 1:+.1%} |")
        verdict = "met" if o["overhead"] <= TARGET_OVERHEAD else "not met"
        lines.append(f"| **{o['model']}**: median of the pairs' overheads (all trials' time against all plain "
                     f"runs': {o['total_overhead']:+.1%}) | | {sum(o['plain']):.1f} | {sum(o['trial']):.1f} | "
                     f"**{o['overhead']:+.1%}** ({verdict}: ≤ {TARGET_OVERHEAD:.0%}) |")
    one, two = by_workers[1], by_workers[2]
    lines += ["", f"**Tuning workers on one SQLite study** (`tune --model {args.worker_model} --trials "
                  f"{args.worker_trials}`, a new study each; trials per hour from the study's first trial start to "
                  "its last finish):", "",
              "| workers | trials finished (pruned) | trial numbers | seconds | trials per hour | processes' wall s |",
              "|---:|---:|---|---:|---:|---:|"]
    for n, w in by_workers.items():
        lines.append(f"| {n} | {w['trials']} ({w['pruned']}) | {', '.join(map(str, w['numbers']))} | "
                     f"{w['seconds']:.0f} | {w['per_hour']:.0f} | {w['process_wall']:.0f} |")
    lines += ["", f"Two workers: {two['per_hour'] / one['per_hour']:.2f}x the trials per hour of one, with no trial "
                  f"run twice (the {two['trials']} trial numbers are distinct)."]
    (root / "bench-tune-overhead.json").write_text(json.dumps({"overhead": overhead, "workers": by_workers},
                                                              default=str, indent=1))
    command = "python -m benchmarks tune_overhead " + " ".join(argv)
    path = update_section("tune-overhead", "\n".join(lines), command.strip())
    print("\n".join(lines))
    print(f"written to {path}")
    return 0
