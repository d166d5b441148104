"""Which device trains a model: detection, the choice, the precision policy that follows, and what
the run record says about it.

TensorFlow (Keras networks): ``--device auto|cpu|gpu`` (auto: the GPU when TensorFlow sees one,
else the CPU; ``gpu`` without one stops with a line saying how to get one). On a GPU the networks
run under Keras' ``mixed_float16`` policy (``--precision auto``) when the GPU has tensor cores
(compute capability 7.0 or more; older GPUs get no speed from float16), with the output layers
kept in float32; on the CPU the policy stays ``float32``, so CPU results are those of a plain fit.

LightGBM: ``device_type`` ``cpu`` (default) or ``gpu`` (OpenCL; the PyPI wheels for Linux include
it); ``check_lightgbm_device`` turns LightGBM's own failure into one line with the way out.

Nothing here imports TensorFlow or LightGBM at module import; the detection functions take the
device list as an argument so the selection logic is tested on machines without a GPU.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable, Sequence

from pipelines.common.log import StageError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "gpu")
PRECISIONS = ("auto", "float32", "mixed_float16")
LGBM_DEVICES = ("cpu", "gpu")
# Tensor cores (Volta and later): where float16 math is faster than float32.
MIXED_PRECISION_MIN_CC = (7, 0)
ENV_DEVICE = "PIPELINES_DEVICE"  # default for --device (auto when unset)
ENV_PRECISION = "PIPELINES_PRECISION"  # the image networks' precision policy (auto when unset)


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    name: str  # TensorFlow's device name, e.g. /physical_device:GPU:0
    description: str = ""  # e.g. "NVIDIA H200"
    compute_capability: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class DeviceChoice:
    """The device a network trains on and its precision policy."""

    kind: str  # "cpu" or "gpu"
    precision: str  # Keras dtype policy: "float32" or "mixed_float16"
    gpus: tuple[GpuInfo, ...] = ()

    def record(self) -> dict:
        """What run.json says about it."""
        out = {"kind": self.kind, "framework": "tensorflow", "precision": self.precision}
        if self.kind == "gpu":
            out["gpus"] = [g.description or g.name for g in self.gpus]
        return out




def tensorflow_gpus(list_devices: Callable[[str], Sequence] | None = None,
                    details: Callable[[object], dict] | None = None) -> list[GpuInfo]:
    """The GPUs TensorFlow sees (imports TensorFlow unless both functions are given)."""
    if list_devices is None or details is None:
        import tensorflow as tf

        list_devices = list_devices or tf.config.list_physical_devices
        details = details or tf.config.experimental.get_device_details
    out = []
    for dev in list_devices("GPU"):
        try:
            info = details(dev) or {}
        except Exception:  # details are optional: a GPU without them is still a GPU
            info = {}
        cc = info.get("compute_capability")
        out.append(GpuInfo(getattr(dev, "name", str(dev)), str(info.get("device_name", "")),
                           tuple(cc) if cc else None))
    return out


def default_device() -> str:
    value = os.environ.get(ENV_DEVICE, "auto").strip().lower() or "auto"
    if value not in DEVICES:
        raise StageError(f"{ENV_DEVICE}={value!r}: use one of {', '.join(DEVICES)}")
    return value


def default_precision() -> str:
    """The precision policy from $PIPELINES_PRECISION (auto when unset): the image networks take it from
    there, beside $PIPELINES_DEVICE, because how a run computes is not what the run is (its identity)."""
    value = os.environ.get(ENV_PRECISION, "auto").strip().lower() or "auto"
    if value not in PRECISIONS:
        raise StageError(f"{ENV_PRECISION}={value!r}: use one of {', '.join(PRECISIONS)}")
    return value


def choose(requested: str, gpus: Sequence[GpuInfo], precision: str = "auto") -> DeviceChoice:
    """The device and precision policy for ``requested`` (auto|cpu|gpu) given the GPUs present."""
    if requested not in DEVICES:
        raise StageError(f"--device {requested!r}: use one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise StageError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if requested == "gpu" and not gpus:
        raise StageError("--device gpu: TensorFlow sees no GPU on this machine: install the GPU environment "
                         "with `make setup GPU=1` (NVIDIA driver needed), or use --device cpu")
    kind = "gpu" if requested == "gpu" or (requested == "auto" and gpus) else "cpu"
    if kind == "cpu":
        if precision == "mixed_float16":
            raise StageError("--precision mixed_float16 needs a GPU (on a CPU float16 is slower, not faster): "
                             "use --precision auto or float32")
        return DeviceChoice("cpu", "float32")
    if precision == "auto":
        ccs = [g.compute_capability for g in gpus]
        precision = ("mixed_float16" if all(cc is not None and cc >= MIXED_PRECISION_MIN_CC for cc in ccs)
                     else "float32")
    return DeviceChoice("gpu", precision, tuple(gpus))


def tensorflow_wheels_clash(installed: Sequence[str] | None = None) -> str | None:
    """A line saying how to repair an environment holding both tensorflow-cpu and tensorflow (both write
    the one ``tensorflow`` package: ``pip install -e '.[gpu]'`` by hand on Linux does that), else None."""
    if installed is None:
        import importlib.metadata

        installed = [d.metadata["Name"].lower() for d in importlib.metadata.distributions() if d.metadata]
    names = {n.replace("_", "-").lower() for n in installed}
    if {"tensorflow", "tensorflow-cpu"} <= names:
        return ("both tensorflow and tensorflow-cpu are installed and overwrite each other's files: install the "
                "GPU environment from its lock (rm -rf .venv && make setup GPU=1), or the CPU one (make setup)")
    return None


def choose_tensorflow(requested: str = "auto", precision: str = "auto",
                      gpus: Sequence[GpuInfo] | None = None) -> DeviceChoice:
    """``choose`` with the GPUs TensorFlow sees (when ``gpus`` is not given)."""
    clash = tensorflow_wheels_clash()
    if clash:
        log.warning(clash)
    return choose(requested, tensorflow_gpus() if gpus is None else list(gpus), precision)


def apply_tensorflow(choice: DeviceChoice) -> None:
    """Make TensorFlow and Keras follow ``choice``: hide the GPUs when it is the CPU, and set Keras'
    global dtype policy (float32, or mixed_float16 on a GPU). Call before building or loading a model."""
    import keras

    if choice.kind == "cpu":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            try:
                tf.config.set_visible_devices([], "GPU")
            except RuntimeError as exc:  # TensorFlow already initialised its devices in this process
                log.warning("could not hide the GPU from TensorFlow (%s); ops may still be placed on it", exc)
    else:
        log.info("training on %s, precision %s", ", ".join(g.description or g.name for g in choice.gpus),
                 choice.precision)
    keras.mixed_precision.set_global_policy(choice.precision)


def lightgbm_params(device: str) -> dict:
    """LightGBM parameters for ``--lgbm-device`` (nothing for the CPU: LightGBM's own default)."""
    if device not in LGBM_DEVICES:
        raise StageError(f"--lgbm-device {device!r}: use one of {', '.join(LGBM_DEVICES)}")
    return {} if device == "cpu" else {"device_type": "gpu"}


def check_lightgbm_device(device: str, train: Callable | None = None) -> None:
    """Fit two trees on a tiny matrix with ``device`` so an unusable GPU stops the stage at once,
    in one line, instead of failing inside the first fold."""
    params = lightgbm_params(device)
    if not params:
        return
    import numpy as np

    import lightgbm as lgb

    train = train or lgb.train
    x = np.arange(200, dtype=np.float64).reshape(100, 2)
    try:
        train({"objective": "binary", "verbosity": -1, "num_threads": 1, **params},
              lgb.Dataset(x, label=(x[:, 0] > 100).astype(int)), num_boost_round=2)
    except lgb.basic.LightGBMError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageError(f"--lgbm-device gpu: LightGBM cannot train on a GPU here ({reason}): it needs an "
                         "OpenCL driver for the GPU (NVIDIA: the driver's OpenCL ICD); or use --lgbm-device cpu"
                         ) from None
