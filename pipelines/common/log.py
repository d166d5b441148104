"""Logging set-up shared by every stage: one clear line per event on stderr."""
from __future__ import annotations

import logging
import os
import sys


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)
    for noisy in ("matplotlib", "PIL", "gensim", "urllib3", "h5py", "absl", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class StageError(Exception):
    """A failure the user can fix: printed as one line (no traceback) by the CLI."""
