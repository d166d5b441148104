"""The train stage, one for every competition: ``make train COMP=<comp> MODEL=<name>|all [ARGS='--epochs 5']``.

The competition (``pipelines.competitions``) declares its models (a ``ModelRegistry`` of specs, each with an
options dataclass), which ``MODEL=all`` trains, and how its features become the CV engine's rows
(``Competition.train_data``). For each model this stage fills the options (field defaults < the model's own
defaults < the source's profile < the command line), builds the model and runs the one CV engine
(``pipelines.common.cv.run_cv``) into the run's folder ``models/<comp>/<source>/<model>/<run>/``
(``pipelines.common.runs``: a run is its model, options and seed; without ``--run`` its name says what differs
from the defaults, plus a short hash, so other options make another run beside the first).

The stage is a ``Stage``: a model whose options, seed and features are unchanged since its finished run is
not run again and nothing is rewritten (``--force`` refits every fold). An interrupted run resumes:
finished folds are kept, and a network resumes inside its fold.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging

from pipelines import competitions, config
from pipelines.common.cv import load_metrics, run_cv
from pipelines.common.locks import output_lock
from pipelines.common.log import StageError
from pipelines.common.models import RunContext, add_model_arguments, resolve_options
from pipelines.common.options import add_options, given_options
from pipelines.common import runs
from pipelines.common.records import input_fingerprints
from pipelines.common.stage import Stage

log = logging.getLogger(__name__)
RUN_OUTS = ("oof.parquet", "metrics.json", "params.json", "run.json")


def add_arguments(parser: argparse.ArgumentParser, comp: str | None = None) -> None:
    """The stage's options; with ``comp``, also every option of that competition's models."""
    known = competitions.get(comp) if comp else None
    names = known.models.names() if known else None
    parser.add_argument("--model", default="all", choices=[*names, "all"] if names else None,
                        help="model to train, or 'all' for the competition's default set (default: all)"
                             + ("" if names else "; `--comp <name> --help` lists them and their options"))
    parser.add_argument("--no-resume", "--force", dest="no_resume", action="store_true",
                        help="refit every fold, ignoring the finished run and earlier checkpoints")
    parser.add_argument("--run", default=None, metavar="NAME",
                        help="the run's folder name under models/<comp>/<source>/<model>/ (default: the options "
                             "that differ from the defaults, or 'default', plus a short hash of the options and "
                             "seed); runs of one model with other options or seeds sit side by side and blend")
    parser.add_argument("--replace", action="store_true",
                        help="when the run's folder holds a run of other options or seed, delete it and train this "
                             "one there (without it such a run is kept and this one refused)")
    parser.add_argument("--seeds", default=None, metavar="S1,S2,...",
                        help="train one run per seed and a bagged run averaging their out-of-fold and test "
                             "predictions (named bag-seeds=S1.S2...+<options>-<hash>; with --run NAME: NAME-seed<S> "
                             "and NAME-bag<N>)")
    parser.add_argument("--checkpoint-every", type=float, default=None, metavar="SECONDS",
                        help=f"seconds between the resumable checkpoints of a network's fit (default "
                             f"{config.CHECKPOINT_EVERY_S:.0f}; 0: after every epoch); one is always written when "
                             "training ends")
    if known:
        if known.train_options is not None:
            add_options(parser, known.train_options, f"{known.name} training")
        add_model_arguments(parser, known.models, known.profiles)


def run_context(args: argparse.Namespace, comp=None) -> RunContext:
    comp = comp or competitions.get(args.comp)
    train_options = (comp.train_options(**given_options(args, comp.train_options))
                     if comp.train_options is not None else None)
    return RunContext(comp=args.comp, source=args.source, source_label=config.source_label(args.source),
                      seed=args.seed, checkpoint_every_s=args.checkpoint_every, train_options=train_options, args=args)


def model_options(comp, name: str, args: argparse.Namespace, ctx: RunContext):
    """(spec, options) of ``name`` for this command line."""
    if name not in comp.models:
        raise StageError(f"unknown {comp.name} model {name!r}; use one of: {', '.join(comp.models.names())}")
    spec = comp.models[name]
    return spec, resolve_options(spec, given_options(args, spec.options), comp.profile(ctx.source_label, name))


def build_model(comp, name: str, args: argparse.Namespace, data=None):
    """(CV model, TrainData) of ``name`` for this command line, without training it (benchmarks, tests)."""
    comp = competitions.get(comp) if isinstance(comp, str) else comp
    ctx = run_context(args, comp)
    spec, options = model_options(comp, name, args, ctx)
    data = data or comp.train_data(args.source, spec, options, ctx)
    return spec.builder()(data, options, ctx), data


def parse_args(comp: str, argv: list[str]) -> argparse.Namespace:
    """The train stage's command line for ``comp`` (``argv``: the options after ``train --comp <comp>``)."""
    from pipelines.__main__ import base_parser

    parser = base_parser(add_help=False)
    add_arguments(parser, comp)
    return parser.parse_args(["train", "--comp", comp, *argv])


def train_model(comp, name: str, args: argparse.Namespace, ctx: RunContext | None = None, *, run: str | None = None,
                overrides: dict | None = None, on_fold=None, out_dir=None) -> dict:
    """Train one model through the CV engine, unless its finished run is up to date; its metrics (``run``: its key).

    ``run``: the run's folder name under the model's folder (default ``--run``, else its identity name:
    ``runs.default_run_name``); ``overrides``: option values over the command line's (a tuner's trial);
    ``on_fold(k, score)``: called after each fold (a tuner's pruning hook); ``out_dir``: the run's folder
    elsewhere than models/<comp>/<source>/<model>/<run> (a tuner's trial folders).
    The run's folder is locked meanwhile: a second process on it stops at once (other runs train side by side).
    """
    comp = competitions.get(comp) if isinstance(comp, str) else comp
    ctx = ctx or run_context(args, comp)
    spec, options = model_options(comp, name, args, ctx)
    if overrides:
        options = dataclasses.replace(options, **overrides)
    ident = runs.identity(spec.name, options, ctx.seed, ctx.train_options)
    run = run or getattr(args, "run", None) or runs.default_run_name(ident, runs.default_identity(comp, spec.name, args.source))
    key = runs.run_key(spec.name, runs.check_run_name(run))
    data = comp.train_data(args.source, spec, options, ctx)
    if out_dir is None:
        runs.migrate_flat_runs(comp.name, args.source)
        out_dir = runs.run_dir(comp.name, args.source, key)
    with output_lock(out_dir, f"train {key}"):
        runs.claim(out_dir, ident, replace=getattr(args, "replace", False),
                   name_hint="RUN=<another name> or ARGS='--run <another name>'")
        return _train_locked(comp, spec, options, data, key, out_dir, args, ctx, on_fold)


def _train_locked(comp, spec, options, data, run: str, out_dir, args: argparse.Namespace, ctx: RunContext,
                  on_fold=None) -> dict:
    inputs = input_fingerprints(data.inputs)
    outs = list(RUN_OUTS) + (["test.parquet"] if data.test_ids is not None else [])
    stage = Stage("train", out_dir, deps=data.inputs, outs=outs,
                  params={"model": spec.name, "options": dataclasses.asdict(options), "seed": ctx.seed,
                          "inputs": inputs, "data": data.extra_params})
    if not getattr(args, "no_resume", False) and stage.up_to_date():
        log.info("%s: up to date (%s): options, seed and features unchanged since its finished run; nothing to do "
                 "(--force refits it)", run, out_dir)
        return {"complete": True, "skipped": True, **load_metrics(out_dir), "run": run}
    if data.description:
        log.info("%s: %s -> %s", run, data.description, out_dir)
    model = spec.builder()(data, options, ctx)
    if data.extra_params:  # recorded in params.json and run.json: what the rows were made of
        model.params = {**model.params, "data": data.extra_params}
    result = run_cv(model, comp=comp.name, source=args.source, out_dir=out_dir, y=data.y, folds=data.folds,
                    train_ids=data.train_ids, test_ids=data.test_ids, task=comp.task, seed=ctx.seed,
                    inputs=inputs, resume=not getattr(args, "no_resume", False), fit_exclude=data.fit_exclude,
                    on_fold=on_fold)
    if result.get("complete"):
        stage.done()
    return {**result, "run": run}


def main(args: argparse.Namespace) -> int:
    train_models(args)
    return 0


def train_models(args: argparse.Namespace) -> dict[str, dict]:
    """Train ``--model`` (or the competition's default set); {run name: its metrics, or the unfinished state}."""
    comp = competitions.get(args.comp)
    ctx = run_context(args, comp)
    names = comp.model_names_for_all(ctx) if args.model == "all" else [args.model]
    seeds = parse_seeds(getattr(args, "seeds", None))
    if getattr(args, "run", None) and len(names) > 1:
        raise StageError("--run names one run: use it with --model <name>, not --model all")
    results = {}
    for i, name in enumerate(names, 1):
        log.info("training %s (%d of %d) on %s/%s", name, i, len(names), comp.name, ctx.source_label)
        if seeds:
            results.update(train_seed_bag(comp, name, args, seeds))
            continue
        result = train_model(comp, name, args, ctx)
        results[result["run"]] = result
    done = {n: r for n, r in results.items() if r.get("complete")}
    if len(done) > 1:
        log.info("%s/%s CV log loss: %s", comp.name, ctx.source_label,
                 ", ".join(f"{n} {r['log_loss']:.5f}" for n, r in done.items()))
    return results


def parse_seeds(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise StageError(f"--seeds {text!r}: give integers separated by commas, e.g. --seeds 42,43,44") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise StageError(f"--seeds {text!r}: give two or more different seeds")
    return seeds


def train_seed_bag(comp, name: str, args: argparse.Namespace, seeds: list[int]) -> dict[str, dict]:
    """One run per seed, then the bagged run averaging their predictions: with ``--run NAME`` the runs
    ``NAME-seed<S>`` and ``NAME-bag<N>``, else each seed's identity name and ``bag-seeds=…+<options>-<hash>``."""
    base_ctx = run_context(args, comp)
    spec, options = model_options(comp, name, args, base_ctx)
    base = getattr(args, "run", None)
    results, members = {}, []
    for seed in seeds:
        seeded = argparse.Namespace(**{**vars(args), "seed": seed, "run": None})
        ctx = run_context(seeded, comp)
        result = train_model(comp, name, seeded, ctx, run=f"{base}-seed{seed}" if base else None)
        results[result["run"]] = result
        members.append(result["run"])
    if not all(r.get("complete") for r in results.values()):
        log.info("%s: %d of %d seeds finished; run the same command again to finish them and bag them", name,
                 sum(bool(r.get("complete")) for r in results.values()), len(seeds))
        return results
    from pipelines.common.bagging import bag_runs

    if base:
        bag = f"{base}-bag{len(seeds)}"
    else:
        differs = runs.differences(runs.identity(spec.name, options, base_ctx.seed, base_ctx.train_options),
                                   runs.default_identity(comp, spec.name, args.source))
        bag = runs.bag_run_name(differs, seeds, members)
    key = runs.run_key(spec.name, bag)
    results[key] = bag_runs(comp, args.source, key, members, model=name)
    return results
