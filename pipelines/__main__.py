"""Command line: ``python -m pipelines <stage> --comp quora|cervix --source sample|kaggle|<path> [options]``.

Each stage is a module with ``add_arguments(parser)`` and ``main(args) -> int``; the Makefile calls
these. Stage modules, by stage:

    data      pipelines.common.acquire        (shared; dispatches to pipelines.<comp>.data)
    features  pipelines.<comp>.features
    train     pipelines.<comp>.train
    blend     pipelines.common.blend          (OOF-fitted blend and the submission CSV)
    submit    pipelines.common.kaggle_io      (upload to Kaggle and poll the score)
    compare   pipelines.common.compare
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pipelines import config
from pipelines.common.log import StageError, setup_logging

STAGES = {
    "data": "pipelines.common.acquire",
    "features": "pipelines.{comp}.features",
    "train": "pipelines.{comp}.train",
    "blend": "pipelines.common.blend",
    "submit": "pipelines.common.kaggle_io",
    "compare": "pipelines.common.compare",
}


def base_parser(add_help: bool) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines", add_help=add_help,
                                description="Kaggle solution pipeline stages")
    p.add_argument("stage", choices=sorted(STAGES))
    p.add_argument("--comp", required=True, choices=sorted(config.COMPETITIONS), help="competition")
    p.add_argument("--source", default="sample",
                   help="sample | kaggle | <path to a folder or archives downloaded by hand> (default: sample)")
    p.add_argument("--seed", type=int, default=config.SEED)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    known, _ = base_parser(add_help=False).parse_known_args(argv)
    module = importlib.import_module(STAGES[known.stage].format(comp=known.comp))
    parser = base_parser(add_help=True)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(module.main(args) or 0)
    except StageError as exc:
        logging.getLogger("pipelines").error("%s", exc)
        return 2
    except OSError as exc:
        from pipelines.common.io import disk_full_error, is_disk_full

        if not is_disk_full(exc):
            raise
        # A write outside pipelines.common.io (a library's own file): still one line naming the file.
        logging.getLogger("pipelines").error("%s", disk_full_error(exc.filename or config.ROOT, cleaned=False))
        return 2
    except KeyboardInterrupt:
        # TensorFlow objects an interrupted fit left half-built log an "Object was never used" dump with a
        # stack when they are collected, after this line: the interrupt is the whole story, so silence them.
        for name in ("tensorflow", "absl"):
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        logging.getLogger("pipelines").error("interrupted: finished outputs are kept, partial ones were discarded; "
                                             "run the same command again to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
