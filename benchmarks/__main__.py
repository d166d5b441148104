"""``python -m benchmarks [name ...]``: run the named benchmarks (default: all, in order)."""
from __future__ import annotations

import importlib
import pkgutil
import sys

import benchmarks
from pipelines.common.log import setup_logging


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__)
                  if m.name.startswith("bench_"))


def main(argv: list[str]) -> int:
    setup_logging()
    names = [a for a in argv if not a.startswith("-")] or available()
    rest = [a for a in argv if a.startswith("-")]
    for name in names:
        mod = name if name.startswith("bench_") else f"bench_{name}"
        if mod not in available():
            print(f"unknown benchmark {name!r}; available: {', '.join(n[6:] for n in available())}", file=sys.stderr)
            return 2
        importlib.import_module(f"benchmarks.{mod}").main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
