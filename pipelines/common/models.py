"""The model registry: each model declares one ``ModelSpec`` (in the file that holds the model).

    @dataclass
    class LgbmOptions:
        learning_rate: float = option(0.02, "shrinkage per round", flag="--lgbm-learning-rate",
                                      space=("float", 0.005, 0.1, "log"))
        ...

    def build(data, options: LgbmOptions, ctx) -> LgbmModel: ...

    SPEC = ModelSpec(name="lgbm", options=LgbmOptions, build=build)

An options dataclass holds every option of a model with its default, its help text and (for tuning)
its search space, once: the train stage's argparse groups are generated from the dataclasses
(``add_model_arguments``), a run's options are the dataclass filled from the command line
(``resolve_options``) and the builder turns them into a ``pipelines.common.cv.CVModel``. Several
models may share one options class (both Siamese networks; every image network): its group is listed
once, with the names of the models using it. A flag two classes declare alike (same flag, type and
default) is one command-line option that fills both.

Defaults, in the order they override each other: the field's default < the spec's ``defaults`` (per
model: bow_svm's C is not bow_lr's) < the source's profile (``Competition.profiles``: the built-in
sample's short settings) < what the command line gives.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from pipelines.common.options import OptionInfo, add_options

@dataclass(frozen=True)
class RunContext:
    """What a builder knows besides the options: the run's seed, data source and stage options."""

    comp: str
    source: str                     # the --source as given
    source_label: str               # its folder label (sample, kaggle, local-<name>)
    seed: int
    checkpoint_every_s: float | None = None
    verbose: int = 2
    train_options: Any = None       # the competition's own train options (Competition.train_options), filled
    args: argparse.Namespace | None = None  # the whole command line


@dataclass(frozen=True)
class ModelSpec:
    """One model: its name, options, builder and (optional) per-model defaults."""

    name: str
    options: type                                   # dataclass of option(...) fields
    build: str | Callable                           # "module:function" or callable(data, options, ctx) -> CVModel
    help: str = ""                                  # one line for --help and the README
    group: str | None = None                        # --help group title (default: the models sharing the options)
    defaults: dict = field(default_factory=dict)    # this model's own defaults of shared options

    def builder(self) -> Callable:
        return _load(self.build)


def _load(ref: str | Callable) -> Callable:
    if callable(ref):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


class ModelRegistry:
    """A competition's model specs, in the order ``--help`` and ``MODEL=all`` list them."""

    def __init__(self, specs: Sequence[ModelSpec]):
        self._specs = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"two model specs are called {spec.name!r}")
            self._specs[spec.name] = spec

    def names(self) -> list[str]:
        return list(self._specs)

    def __contains__(self, name: str) -> bool:
        return name in self._specs

    def __getitem__(self, name: str) -> ModelSpec:
        return self._specs[name]

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def option_classes(self) -> list[tuple[type, list[ModelSpec]]]:
        """Each options class once, with the specs using it, in first-use order."""
        seen: dict[type, list[ModelSpec]] = {}
        for spec in self._specs.values():
            seen.setdefault(spec.options, []).append(spec)
        return list(seen.items())


def _default_text(info: OptionInfo, specs: list[ModelSpec], profiles: dict) -> str:
    parts = []
    if info.type is not bool and info.default not in (None, ""):
        parts.append(f"default {info.default}")
    parts += [f"{s.name} {s.defaults[info.name]}" for s in specs if info.name in s.defaults]
    names = {s.name for s in specs}
    for label, by_model in (profiles or {}).items():
        vals = sorted({str(v[info.name]) for m, v in by_model.items()
                       if info.name in v and (m == "*" or m in names)})
        if vals:
            parts.append(f"{'/'.join(vals)} on the {label} data")
    return f" ({'; '.join(parts)})" if parts else ""


def add_model_arguments(parser: argparse.ArgumentParser, registry: ModelRegistry, profiles: dict | None = None) -> None:
    """One argparse group per options class (titled by the models using it), every option once."""
    declared: dict[str, OptionInfo] = {}
    for options_cls, specs in registry.option_classes():
        title = specs[0].group or f"options of {', '.join(s.name for s in specs)}"
        add_options(parser, options_cls, title, declared,
                    default_text=lambda info, specs=specs: _default_text(info, specs, profiles or {}))


def resolve_options(spec: ModelSpec, given: dict, profile: dict | None = None):
    """The spec's options dataclass: field defaults < spec.defaults < profile < given."""
    names = {f.name for f in dataclasses.fields(spec.options)}
    values = {k: v for k, v in spec.defaults.items() if k in names}
    values.update({k: v for k, v in (profile or {}).items() if k in names})
    values.update({k: v for k, v in given.items() if k in names})
    return spec.options(**values)
