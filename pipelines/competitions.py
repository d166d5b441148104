"""The competitions this pipeline knows: one line each, ``name: module declaring COMPETITION``.

Adding a competition is one package (``pipelines/<name>/`` with a ``competition.py`` declaring a
``pipelines.common.competition.Competition``) plus one line here. ``register`` adds one at run time
(a plug-in package elsewhere, or a test's).
"""
from __future__ import annotations

import importlib

REGISTRY: dict[str, str] = {
    "quora": "pipelines.quora.competition",
    "cervix": "pipelines.cervix.competition",
}
_loaded: dict = {}


def names() -> list[str]:
    return list(REGISTRY)


def register(name: str, module: str) -> None:
    """Add (or replace) the competition ``name`` declared as ``COMPETITION`` in ``module``."""
    REGISTRY[name] = module
    _loaded.pop(name, None)


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)
    _loaded.pop(name, None)


def get(name: str):
    """The ``Competition`` called ``name``; an unknown name is one line listing the known ones."""
    if name not in REGISTRY:
        from pipelines.common.log import StageError

        raise StageError(f"unknown competition {name!r}; use one of: {', '.join(REGISTRY)} "
                         f"(a new one is a package plus a line in pipelines/competitions.py)")
    if name not in _loaded:
        comp = importlib.import_module(REGISTRY[name]).COMPETITION
        if comp.name != name:
            raise ValueError(f"{REGISTRY[name]} declares competition {comp.name!r}, registered as {name!r}")
        _loaded[name] = comp
    return _loaded[name]


if __name__ == "__main__":  # `python -m pipelines.competitions`: the names, one per line (the Makefile's list)
    print("\n".join(names()))
