"""Command line: ``python -m pipelines <stage> --comp <name> --source sample|kaggle|<path> [options]``.

The console script ``kaggle-pipeline`` (pyproject's ``[project.scripts]``) is the same command.
``python -m pipelines --help`` lists the stages and the competitions; ``python -m pipelines <stage>
--help`` a stage's generic options; ``python -m pipelines <stage> --comp <name> --help`` adds that
competition's options.

Each stage is a module with ``add_arguments(parser[, comp])`` and ``main(args) -> int``; the Makefile calls
these. A stage whose ``add_arguments`` takes ``comp`` adds only that competition's options (its models', its
sample's, its submission's). Stage modules, by stage:

    data      pipelines.common.acquire        (the competition's raw rules and sample: pipelines.competitions)
    features  the competition's own           (``Competition.features``, e.g. pipelines.quora.features)
    train     pipelines.common.train          (the competition's model registry)
    tune      pipelines.common.tune           (Optuna over a model's declared search space)
    blend     pipelines.common.blend          (OOF-fitted blend and the submission CSV)
    submit    pipelines.common.kaggle_io      (upload to Kaggle and poll the score)
    compare   pipelines.common.compare

Exit status: 0 done; 1 ``compare --strict`` found something that needs attention; 2 a usage error
(argparse: an unknown option, a missing ``--comp``); 3 a stage error (``StageError``, a full disk:
one line on stderr, no traceback; ``EXIT_STAGE_ERROR``); 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import logging
import os
import sys

from pipelines import competitions, config
from pipelines.common.locks import output_lock
from pipelines.common.log import StageError, setup_logging

EXIT_USAGE = 2  # argparse's own status for a usage error
EXIT_STAGE_ERROR = 3  # a stage failed with one line for the user (StageError, disk full)
EXIT_INTERRUPTED = 130

PROG = "python -m pipelines"
CONSOLE_SCRIPT = "kaggle-pipeline"  # pyproject.toml [project.scripts]

STAGES = {  # None: the competition's own module (Competition.features)
    "data": "pipelines.common.acquire",
    "features": None,
    "train": "pipelines.common.train",
    "tune": "pipelines.common.tune",
    "blend": "pipelines.common.blend",
    "submit": "pipelines.common.kaggle_io",
    "compare": "pipelines.common.compare",
}

# One line per stage for `--help` (the Makefile's `make help` says the same).
STAGE_HELP = {
    "data": "get a competition's raw data (sample, Kaggle, or files you downloaded) and its manifest",
    "features": "build the cached model inputs from the raw data",
    "train": "K-fold train a model (--model <name>|all): out-of-fold and test predictions, metrics",
    "tune": "Optuna search over a model's declared options, scored by its OOF log loss; the best trained as a run",
    "blend": "OOF-fitted blend of the trained models and a leaderboard CSV in submissions/",
    "submit": "upload a submission to Kaggle (--source kaggle) and poll its score",
    "compare": "side-by-side report of every model and baseline",
}


def _prog() -> str:
    return CONSOLE_SCRIPT if os.path.basename(sys.argv[0] or "") == CONSOLE_SCRIPT else PROG


def _competitions() -> list[str]:
    return sorted(competitions.names())


def stage_module(stage: str, comp: str):
    """The module of ``stage`` for the competition ``comp``."""
    name = STAGES[stage] or competitions.get(comp).features
    return importlib.import_module(name)


def stage_output(stage: str, args: argparse.Namespace):
    """The folder a stage writes, locked while it runs (pipelines.common.locks); None: the stage locks its
    own (train: each run) or writes nothing that two processes could mix (submit)."""
    folders = {"data": config.source_dir, "features": config.features_dir, "compare": config.reports_dir,
               "blend": lambda comp, source: config.model_dir(comp, source, "blend")}
    return folders[stage](args.comp, args.source) if stage in folders else None


def add_stage_arguments(module, parser: argparse.ArgumentParser, comp: str) -> None:
    """The stage's options; those of ``comp`` too where the stage's add_arguments takes a competition."""
    if len(inspect.signature(module.add_arguments).parameters) > 1:
        module.add_arguments(parser, comp)
    else:
        module.add_arguments(parser)


def base_parser(add_help: bool, prog: str = PROG, **kwargs) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, add_help=add_help, description=kwargs.pop("description",
                                "Kaggle solution pipeline stages"), **kwargs)
    p.add_argument("stage", choices=sorted(STAGES), metavar="<stage>",
                   help=f"one of: {', '.join(STAGES)}")
    p.add_argument("--comp", required=True, choices=_competitions(), help="competition")
    p.add_argument("--source", default="sample",
                   help="sample | kaggle | <path to a folder or archives downloaded by hand> (default: sample)")
    p.add_argument("--seed", type=int, default=config.SEED)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _usage(prog: str, stage: str) -> str:
    return f"{prog} {stage} --comp {{{','.join(_competitions())}}} [--source SOURCE] [--seed SEED] [-v] [options]"


def top_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """``--help`` without a stage: the stages with one line each, the competitions, the exit statuses."""
    width = max(map(len, STAGES))
    stages = "\n".join(f"  {name:<{width}}  {STAGE_HELP[name]}" for name in STAGES)
    description = (f"Kaggle solution pipeline stages.\n\nstages:\n{stages}\n\n"
                   f"competitions: {', '.join(_competitions())}")
    epilog = (f"`{prog} <stage> --help` lists a stage's generic options;\n"
              f"`{prog} <stage> --comp <name> --help` adds that competition's.\n\n"
              f"exit status: 0 done, 1 compare --strict found something that needs attention, {EXIT_USAGE} usage "
              f"error,\n{EXIT_STAGE_ERROR} stage error (one line on stderr), {EXIT_INTERRUPTED} interrupted")
    return base_parser(True, prog, usage=_usage(prog, "<stage>"), description=description, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)


def stage_parser(stage: str, prog: str = PROG) -> argparse.ArgumentParser:
    """``<stage> --help`` without ``--comp``: the options every competition's stage has."""
    epilog = (f"These are the options every competition's {stage} stage takes; "
              f"`{prog} {stage} --comp <name> --help` adds that competition's "
              f"(competitions: {', '.join(_competitions())}).")
    return base_parser(True, prog, usage=_usage(prog, stage), description=f"{stage}: {STAGE_HELP[stage]}",
                       epilog=epilog)


def _peek(argv: list[str]) -> argparse.Namespace:
    """The stage and competition named in argv, without validating anything (no exit)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("stage", nargs="?")
    p.add_argument("--comp")
    p.add_argument("--source")
    p.add_argument("--seed")
    p.add_argument("-v", "--verbose", action="store_true")
    try:
        return p.parse_known_args(argv)[0]
    except SystemExit:  # e.g. --comp with no value: the real parser below says so
        return argparse.Namespace(stage=None, comp=None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = _prog()
    peek = _peek(argv)
    if peek.stage not in STAGES:
        top_parser(prog).parse_args(argv)  # --help exits 0; anything else is a usage error (exit 2)
        return EXIT_USAGE
    if peek.comp is None:
        stage_parser(peek.stage, prog).parse_args(argv)  # --help exits 0; else "--comp is required" (exit 2)
        return EXIT_USAGE
    known, _ = base_parser(add_help=False, prog=prog).parse_known_args(argv)  # an unknown --comp: exit 2
    setup_logging(known.verbose)
    try:
        module = stage_module(known.stage, known.comp)
    except StageError as exc:  # a competition whose declaration cannot be loaded
        logging.getLogger("pipelines").error("%s", exc)
        return EXIT_STAGE_ERROR
    parser = base_parser(add_help=True, prog=prog)
    add_stage_arguments(module, parser, known.comp)
    args = parser.parse_args(argv)
    try:
        folder = stage_output(known.stage, args)
        with output_lock(folder, known.stage) if folder is not None else contextlib.nullcontext():
            return int(module.main(args) or 0)
    except StageError as exc:
        logging.getLogger("pipelines").error("%s", exc)
        return EXIT_STAGE_ERROR
    except OSError as exc:
        from pipelines.common.io import disk_full_error, is_disk_full

        if not is_disk_full(exc):
            raise
        # A write outside pipelines.common.io (a library's own file): still one line naming the file.
        logging.getLogger("pipelines").error("%s", disk_full_error(exc.filename or config.ROOT, cleaned=False))
        return EXIT_STAGE_ERROR
    except KeyboardInterrupt:
        # TensorFlow objects an interrupted fit left half-built log an "Object was never used" dump with a
        # stack when they are collected, after this line: the interrupt is the whole story, so silence them.
        for name in ("tensorflow", "absl"):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        logging.getLogger("pipelines").error("interrupted: finished outputs are kept, partial ones were discarded; "
                                             "run the same command again to resume")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
