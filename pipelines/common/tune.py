"""The tune stage: ``make tune COMP=<comp> MODEL=<name> TRIALS=N [TIMEOUT=seconds]``.

Optuna searches the model's declared search space (the ``space=`` of its options dataclass fields,
``pipelines.common.options.search_space``), scored by the out-of-fold log loss of a full K-fold run on the
shared folds. Each trial is one run of the model through the train stage's CV engine, with the trial's values
over the command line's options (an option given on the command line is fixed, not searched). After every fold
the trial reports the fold's log loss; a median pruner stops a trial whose fold is worse than the median of
the earlier trials at that fold.

Where things go (``<runs>`` = ``models/<comp>/<source>/<model>``, beside the model's runs):

    <runs>/.tune/<study>.db          the study (SQLite, the default storage); resumable
    <runs>/.tune/<study>/t<n>/       trial n's run folder (working files; blend and compare skip dot-folders)
    <runs>/tuned-<study>/            the best trial's options trained as an ordinary run, with tune.json
                                     (study, storage, best value and trial, trial counts, best params)
    reports/<comp>/<source>/tune_<study>_history.png, tune_<study>_importance.png

The study is called ``--study`` (default: the model's name) and belongs to one model. ``--storage URL`` joins
a shared study: any URL Optuna's RDB storage opens (``postgresql://``, ``mysql://``, ``sqlite:///``) or
``journal:<path>``, a journal file on a disk every worker sees. Workers started on one study together finish
``--trials`` finished (complete or pruned) trials in all: each trial is counted before it is created (under a
file lock beside a SQLite or journal file; on a database server a surplus trial is marked failed at once).
A trial whose worker died is marked failed (and not counted) by the next worker: at once when its process on
this machine has ended, and on a database storage (SQLite included) when its heartbeat has stopped for
HEARTBEAT_GRACE_S (a worker on another machine). Ctrl-C marks its trial failed.
A second call with the same study adds trials up to the new ``--trials``.

The sampler is TPE (``constant_liar``: running trials count as bad ones, so parallel workers spread out), its
random draws for trial n seeded by ``--seed`` + n: a single worker repeats the same trials with the same seed.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import socket
import time
import warnings
from pathlib import Path

from pipelines import competitions, config
from pipelines.common.io import write_json
from pipelines.common.locks import output_lock
from pipelines.common.log import StageError
from pipelines.common.options import given_options, search_space

log = logging.getLogger(__name__)
TUNE_DIR = ".tune"  # under models/<comp>/<source>/<model>/: a dot-folder, so no trial is taken for a run
DEFAULT_TRIALS = 20
JOURNAL_PREFIX = "journal:"
HEARTBEAT_S = 60         # a database storage's trial records a heartbeat this often while it runs ...
HEARTBEAT_GRACE_S = 300  # ... and is marked failed (its worker died) when none came for this long
STORAGE_HELP = ("sqlite:///path/study.db, a postgresql:// or mysql:// URL (its server reachable, its driver "
                "installed), or journal:/path/on/a/shared/disk.log")


def add_arguments(parser: argparse.ArgumentParser, comp: str | None = None) -> None:
    """The tune stage's options; with ``comp``, the train stage's too (a trial's fixed options, e.g. rounds)."""
    g = parser.add_argument_group("tuning")
    g.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                   help=f"finished (complete or pruned) trials the study should hold (default {DEFAULT_TRIALS}); "
                        "workers on one study share them")
    g.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="start no new trial after this many seconds (a running trial finishes)")
    g.add_argument("--study", default=None, metavar="NAME",
                   help="the study's name (default: the model's); its best run is tuned-<study>")
    g.add_argument("--storage", default=None, metavar="URL",
                   help="where the study lives (default: sqlite in models/<comp>/<source>/.tune/<study>.db): "
                        + STORAGE_HELP)
    if comp:
        from pipelines.common import train

        train.add_arguments(parser, comp)  # --model, --run (the best run's name), --force, the model options
    else:
        parser.add_argument("--model", default=None,
                            help="the model to tune; `tune --comp <name> --help` lists them and their options")


def main(args: argparse.Namespace) -> int:
    tune(args)
    return 0


# -- the search space ------------------------------------------------------------------------------------------

def distributions(space: dict[str, tuple]) -> dict:
    """{field: Optuna distribution} of a search space declared with ``option(..., space=...)``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for name, spec in space.items():
        try:
            kind, *rest = spec
            log_scale = len(rest) > 2 and rest[2] == "log"
            if kind == "float":
                out[name] = FloatDistribution(float(rest[0]), float(rest[1]), log=log_scale)
            elif kind == "int":
                out[name] = IntDistribution(int(rest[0]), int(rest[1]), log=log_scale)
            elif kind == "categorical":
                out[name] = CategoricalDistribution(list(rest[0]))
            else:
                raise ValueError(f"unknown kind {kind!r}")
        except (ValueError, TypeError, IndexError) as exc:
            raise StageError(f"the search space of option {name!r} is {spec!r} ({exc}): declare it as "
                             "('float', low, high[, 'log']), ('int', low, high) or ('categorical', [values])"
                             ) from None
    return out


def model_space(comp, name: str, args: argparse.Namespace) -> tuple[object, dict]:
    """(spec, {field: distribution}) of the options ``name`` searches: its declared space less the options the
    command line fixes."""
    if not name or name == "all":
        raise StageError(f"tune one model: --model <name> (MODEL=<name>), one of: {', '.join(comp.models.names())}")
    if name not in comp.models:
        raise StageError(f"unknown {comp.name} model {name!r}; use one of: {', '.join(comp.models.names())}")
    spec = comp.models[name]
    space = search_space(spec.options)
    if not space:
        raise StageError(f"{name} declares no search space: give some fields of {spec.options.__name__} "
                         f"({spec.options.__module__}) a space=(...) to tune it")
    fixed = sorted(set(space) & set(given_options(args, spec.options)))
    if fixed:
        log.info("%s: fixed by the command line, not searched: %s", name, ", ".join(fixed))
    space = {k: v for k, v in space.items() if k not in fixed}
    if not space:
        raise StageError(f"the command line fixes every option {name} searches ({', '.join(fixed)}): leave one out")
    return spec, distributions(space)


# -- storage ---------------------------------------------------------------------------------------------------

def tune_dir(comp: str, source: str, model: str) -> Path:
    return config.models_dir(comp, source) / model / TUNE_DIR


def default_storage(comp: str, source: str, study: str, model: str) -> str:
    return f"sqlite:///{(tune_dir(comp, source, model) / f'{study}.db').resolve()}"


def move_earlier_study(comp: str, source: str, study: str, model: str) -> None:
    """A study of the earlier layout (``models/<comp>/<source>/.tune/<study>.db`` and its trial folders) moves
    beside the model's runs, where the default storage now is, unless one is there already."""
    old, new = config.models_dir(comp, source) / TUNE_DIR, tune_dir(comp, source, model)
    if not (old / f"{study}.db").exists() or (new / f"{study}.db").exists():
        return
    new.mkdir(parents=True, exist_ok=True)
    for name in (f"{study}.db", study):
        if (old / name).exists() and not (new / name).exists():
            (old / name).rename(new / name)
    log.info("study %r moved from %s to %s (beside %s's runs)", study, old, new, model)


def shown_url(url: str) -> str:
    """``url`` without its password."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def storage_file(url: str) -> Path | None:
    """The file a SQLite or journal storage lives in (None: a database server)."""
    if url.startswith(JOURNAL_PREFIX):
        return Path(url[len(JOURNAL_PREFIX):]).expanduser()
    if url.startswith("sqlite:///") and len(url) > len("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    return None


def open_storage(url: str):
    """Optuna's storage of ``url``; StageError (one line naming the URL and the fix) when it cannot be opened."""
    import optuna

    def fail(why: str):
        return StageError(f"--storage {shown_url(url)}: Optuna cannot open it ({why}); give {STORAGE_HELP}")

    path = storage_file(url)
    if path is not None and not path.parent.is_dir():
        raise fail(f"the folder {path.parent} does not exist")
    try:
        if url.startswith(JOURNAL_PREFIX):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            if not str(path):
                raise ValueError("no file after journal:")
            return JournalStorage(JournalFileBackend(str(path)))
        kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's words
            warnings.simplefilter("ignore")
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=HEARTBEAT_GRACE_S)
    except Exception as exc:  # sqlalchemy's many errors: a bad URL, a missing driver, an unreachable server
        text = str(exc).strip().splitlines()
        raise fail(f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")) from None


def ask_lock(url: str):
    """A file lock beside a SQLite or journal file, held while a worker opens the study and while it counts the
    trials and creates one (so workers never create more than --trials); a null context for a database server
    (or a file whose folder is missing: opening it says so)."""
    path = storage_file(url)
    if path is None or not path.parent.is_dir():
        return contextlib.nullcontext()
    import filelock

    return filelock.FileLock(str(path) + ".ask.lock", timeout=600)


def sampler(seed: int, n_trials: int):
    """TPE whose random draws for trial n are seeded by ``seed + n`` (reproducible alone, apart in parallel)."""
    from optuna.samplers import TPESampler

    class TrialSeededTPE(TPESampler):
        def before_trial(self, study, trial):
            s = (seed + trial.number) % (2 ** 32)
            self._rng.rng.seed(s)
            self._random_sampler._rng.rng.seed(s)
            super().before_trial(study, trial)

    return TrialSeededTPE(seed=seed, n_startup_trials=min(10, max(2, n_trials // 3)), constant_liar=True)


def pruner(n_trials: int):
    """Median pruning from the first fold on, once a few trials have finished."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=min(5, max(2, n_trials // 4)), n_warmup_steps=0)


# -- the search ------------------------------------------------------------------------------------------------

def load_study(args: argparse.Namespace, model: str):
    import optuna

    name = args.study or model
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise StageError(f"--study {name!r}: use letters, digits, '_', '-' and '.' (a folder and run name)")
    url = args.storage or default_storage(args.comp, args.source, name, model)
    if args.storage is None:
        move_earlier_study(args.comp, args.source, name, model)
        tune_dir(args.comp, args.source, model).mkdir(parents=True, exist_ok=True)
    with ask_lock(url):  # two workers starting together on a new SQLite file: one creates its tables
        storage = open_storage(url)
        try:
            study = optuna.create_study(study_name=name, storage=storage, sampler=sampler(args.seed, args.trials),
                                        pruner=pruner(args.trials), direction="minimize", load_if_exists=True)
        except Exception as exc:
            raise StageError(f"--storage {shown_url(url)}: Optuna cannot open study {name!r} there "
                             f"({type(exc).__name__}: {exc}); give {STORAGE_HELP}") from None
        owner = study.user_attrs.get("model")
        if owner is None:
            study.set_user_attr("model", model)
            study.set_user_attr("comp", args.comp)
    if owner is not None and owner != model:
        raise StageError(f"study {name!r} in {shown_url(url)} tunes {owner}, not {model}: give another --study")
    return study, name, url, storage


FINISHED = ("COMPLETE", "PRUNED")
COUNTED = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")


def _states(study, states) -> list:
    from optuna.trial import TrialState

    wanted = tuple(getattr(TrialState, s) for s in states)
    return study.get_trials(deepcopy=False, states=wanted)


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def fail_dead_trials(study) -> None:
    """Mark failed the running trials whose worker is gone: on a database storage those without a heartbeat
    for HEARTBEAT_GRACE_S (any machine), in any storage those whose process on this machine has ended."""
    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)

    host = socket.gethostname()
    for t in _states(study, ("RUNNING",)):
        worker = str(t.user_attrs.get("worker", ""))
        whost, _, pid = worker.rpartition(":")
        if whost != host or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            log.info("trial %d: its worker (PID %s) is gone; marking it failed", t.number, pid)
            with contextlib.suppress(Exception):  # another worker may have marked it meanwhile
                study.tell(t.number, state=TrialState.FAIL)
        except PermissionError:
            pass


def next_trial(study, dists: dict, n_trials: int, url: str):
    """A new trial with its values, or None when the study holds (or is running) ``n_trials`` already."""
    from optuna.trial import TrialState

    with ask_lock(url):
        fail_dead_trials(study)
        if len(_states(study, COUNTED)) >= n_trials:
            return None
        with warnings.catch_warnings():  # "heartbeats are meant for optimize()": this loop beats them itself
            warnings.simplefilter("ignore")
            trial = study.ask(fixed_distributions=dists)
        trial.set_user_attr("worker", _worker_id())
    earlier = [t for t in _states(study, COUNTED) if t.number < trial.number]
    if len(earlier) >= n_trials:  # another worker created the last one meanwhile (a database server: no file lock)
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=TrialState.FAIL)
        return None
    return trial


def trial_args(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "no_resume": False, "run": None, "seeds": None})


def run_trial(comp, spec, args: argparse.Namespace, study_name: str, trial) -> float:
    """Train trial ``trial`` as a run in .tune/<study>/t<n>; its OOF log loss (optuna.TrialPruned when pruned)."""
    import optuna

    from pipelines.common import train

    targs = trial_args(args)
    run = f"t{trial.number}"
    out_dir = tune_dir(args.comp, args.source, spec.name) / study_name / run

    def on_fold(k: int, score: dict) -> None:
        trial.report(float(score["log_loss"]), step=k)
        if trial.should_prune():
            raise optuna.TrialPruned(f"fold {k + 1}: log loss {score['log_loss']:.5f}")

    result = train.train_model(comp, spec.name, targs, train.run_context(targs, comp),
                               run=f"{spec.name}-{study_name}-{run}", overrides=dict(trial.params), on_fold=on_fold,
                               out_dir=out_dir)
    if not result.get("complete"):
        raise RuntimeError(f"trial {trial.number}: the run in {out_dir} did not finish")
    return float(result["log_loss"])


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


@contextlib.contextmanager
def heartbeat(storage, trial):
    """While the block runs, the trial's heartbeat every HEARTBEAT_S (database storages; others: nothing)."""
    import threading

    if not (hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval()):
        yield
        return
    stop = threading.Event()

    def beat():
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried; the trial goes on
                storage.record_heartbeat(trial._trial_id)
            if stop.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, name=f"tune-heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def _quiet_runs(verbose: bool):
    """One log line per trial: the runs' own INFO lines are hidden unless -v."""
    root, own = logging.getLogger("pipelines"), logging.getLogger(__name__)
    old = root.level, own.level
    if not verbose:
        root.setLevel(logging.WARNING)
        own.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.setLevel(old[0])
        own.setLevel(old[1])


def search(comp, spec, dists: dict, args: argparse.Namespace, study, study_name: str, url: str, storage) -> int:
    """Run trials until the study holds --trials finished ones (or --timeout); the trials this worker ran."""
    import optuna
    from optuna.trial import TrialState

    deadline = time.monotonic() + args.timeout if args.timeout else None
    ran = 0
    with _quiet_runs(getattr(args, "verbose", False)):
        while deadline is None or time.monotonic() < deadline:
            trial = next_trial(study, dists, args.trials, url)
            if trial is None:
                break
            t0 = time.perf_counter()
            try:
                with heartbeat(storage, trial):
                    value = run_trial(comp, spec, args, study_name, trial)
            except optuna.TrialPruned as exc:
                study.tell(trial, state=TrialState.PRUNED)
                log.info("trial %d: pruned at %s after %.0fs (%s)", trial.number, exc, time.perf_counter() - t0,
                         _params_text(trial.params))
            except BaseException as exc:
                study.tell(trial, state=TrialState.FAIL)
                log.warning("trial %d: %s (%s); marked failed in the study, not counted", trial.number,
                            "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                            _params_text(trial.params))
                raise
            else:
                study.tell(trial, value)
                best = study.best_trial
                log.info("trial %d: log loss %.5f in %.0fs (%s); best %.5f (trial %d)", trial.number, value,
                         time.perf_counter() - t0, _params_text(trial.params), best.value, best.number)
            ran += 1
        else:
            log.info("--timeout %gs reached: no new trial started", args.timeout)
    return ran


def tune(args: argparse.Namespace) -> dict:
    """Search, then train the best trial as the run tuned-<study>; a summary (what tune.json records)."""
    import optuna

    comp = competitions.get(args.comp)
    if args.trials < 1:
        raise StageError(f"--trials {args.trials}: give 1 or more (TRIALS=N)")
    if args.timeout is not None and args.timeout <= 0:
        raise StageError(f"--timeout {args.timeout:g}: give a positive number of seconds")
    if getattr(args, "seeds", None):
        raise StageError("--seeds: tune with one seed; bag the tuned options afterwards with `make train ... "
                         "ARGS='--seeds ...'`")
    spec, dists = model_space(comp, getattr(args, "model", None), args)
    optuna.logging.set_verbosity(logging.INFO if getattr(args, "verbose", False) else logging.WARNING)
    study, study_name, url, storage = load_study(args, spec.name)
    before = len(_states(study, FINISHED))
    log.info("tuning %s on %s/%s: study %r in %s, %d of %d trials finished; searching %s", spec.name, comp.name,
             config.source_label(args.source), study_name, shown_url(url), before, args.trials, ", ".join(dists))
    ran = search(comp, spec, dists, args, study, study_name, url, storage)
    summary = summarise(study, study_name, url, spec, args, dists)
    log.info("study %r: %d complete, %d pruned, %d failed (%d run here)%s", study_name, summary["n_complete"],
             summary["n_pruned"], summary["n_failed"], ran,
             f"; best log loss {summary['best_value']:.5f} (trial {summary['best_trial']}: "
             f"{_params_text(summary['best_params'])})" if summary["best_trial"] is not None else "")
    save_pictures(study, comp.name, args.source, study_name)
    if summary["best_trial"] is None:
        log.warning("study %r has no complete trial yet: no tuned run (run the same command again)", study_name)
        return summary
    summary["final"] = train_best(comp, spec, args, study_name, summary)
    return summary


def summarise(study, study_name: str, url: str, spec, args, dists: dict) -> dict:
    counts = {s: len(_states(study, (s,))) for s in ("COMPLETE", "PRUNED", "FAIL")}
    best = study.best_trial if counts["COMPLETE"] else None
    return {"study": study_name, "storage": shown_url(url), "model": spec.name, "direction": "minimize",
            "metric": "log_loss", "seed": args.seed, "trials_wanted": args.trials,
            "n_complete": counts["COMPLETE"], "n_pruned": counts["PRUNED"], "n_failed": counts["FAIL"],
            "n_trials": counts["COMPLETE"] + counts["PRUNED"],
            "best_trial": best.number if best else None, "best_value": best.value if best else None,
            "best_params": dict(best.params) if best else {},
            "search_space": {k: list(v) for k, v in search_space(spec.options).items() if k in dists}}


def best_run_name(args: argparse.Namespace, study_name: str) -> str:
    return getattr(args, "run", None) or f"tuned-{study_name}"


def train_best(comp, spec, args: argparse.Namespace, study_name: str, summary: dict) -> dict | None:
    """The best trial's options trained as an ordinary run (blend and compare see it), with tune.json."""
    from pipelines.common import train

    from pipelines.common import runs

    name = runs.check_run_name(best_run_name(args, study_name))
    run = runs.run_key(spec.name, name)
    runs.migrate_flat_runs(args.comp, args.source)
    out_dir = runs.run_dir(args.comp, args.source, run)
    try:
        lock = output_lock(out_dir, f"tune {study_name}: the best trial")
        lock.__enter__()
    except StageError:
        log.info("%s: another worker is training it; leaving it to that worker", run)
        return None
    try:
        log.info("training the best trial (%d: %s) as the run %s", summary["best_trial"],
                 _params_text(summary["best_params"]), run)
        # tuned-<study> is the study's current best: a better trial found later replaces the earlier best's run
        final_args = argparse.Namespace(**{**vars(args), "run": name, "seeds": None, "replace": True})
        result = train.train_model(comp, spec.name, final_args, run=name, overrides=summary["best_params"])
        if result.get("complete"):
            write_json(out_dir / "tune.json", {k: v for k, v in summary.items() if k != "final"})
            log.info("%s: CV log loss %.5f (best trial %.5f) -> %s", run, result["log_loss"],
                     summary["best_value"], out_dir)
        return result
    finally:
        lock.__exit__(None, None, None)


def save_pictures(study, comp: str, source: str, study_name: str) -> list[Path]:
    """Optimisation history and parameter importances as PNGs in the report folder; a failure is a warning."""
    from pipelines.common.plots import save_figure

    out = config.reports_dir(comp, source)
    written = []
    titles = {"history": f"tuning {study_name}: out-of-fold log loss per trial",
              "importance": f"tuning {study_name}: parameter importances (fANOVA)"}
    for kind, what in (("history", "plot_optimization_history"), ("importance", "plot_param_importances")):
        path = out / f"tune_{study_name}_{kind}.png"
        try:
            import matplotlib.pyplot as plt
            import optuna.visualization.matplotlib as ovm

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = getattr(ovm, what)(study)
            ax = ax.flat[0] if hasattr(ax, "flat") else ax
            ax.set_title(titles[kind])
            if kind == "history":
                ax.set_ylabel("out-of-fold log loss")
            fig = ax.figure
            fig.set_size_inches(max(6.0, fig.get_figwidth()), max(4.0, fig.get_figheight()))
            save_figure(fig, path)
            written.append(path)
        except Exception as exc:  # a picture must not fail the tuning (e.g. importances need 2 complete trials)
            log.warning("tune %s: no %s picture (%s: %s)", study_name, kind, type(exc).__name__, exc)
            with contextlib.suppress(Exception):
                plt.close("all")
    if written:
        log.info("tune %s: pictures in %s", study_name, out)
    return written
