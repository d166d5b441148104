"""Issue 15, the locked environment: the lock files cover the package, setup and CI install from them,
and every run records its environment, which the comparison checks."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from pipelines import config
from pipelines.common import compare, records
from pipelines.common.io import read_json, write_json

from compare_helpers import NoisyOracleModel, fake_targets, point_config, train_fake

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ("requirements.lock", "requirements-gpu.lock")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock_entries(name: str) -> dict[str, tuple[str, str | None, int]]:
    """{name: (version, marker, number of hashes)} of every entry of a lock file."""
    out, current = {}, None
    for line in (ROOT / name).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+?)(?:\s*;\s*(.+?))?\s*\\$", line)
        if m:
            current = records._norm(m.group(1))
            out[current] = (m.group(2), m.group(3), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, marker, n = out[current]
            out[current] = (version, marker, n + 1)
        elif line and not line.startswith(" "):
            current = None
    return out


def direct_pins() -> dict[str, list[tuple[str, str | None]]]:
    """{name: [(version, marker)]} of pyproject's dependencies, test extra and build group."""
    from packaging.requirements import Requirement

    data = pyproject()
    specs = (data["project"]["dependencies"] + data["project"]["optional-dependencies"]["test"]
             + data["dependency-groups"]["build"])
    out: dict[str, list] = {}
    for spec in specs:
        req = Requirement(spec)
        (pin,) = req.specifier
        assert pin.operator == "==", f"{spec}: pyproject pins every dependency exactly"
        out.setdefault(records._norm(req.name), []).append((pin.version, str(req.marker) if req.marker else None))
    return out


@pytest.mark.parametrize("name", LOCKS)
def test_every_lock_entry_is_pinned_with_hashes(name):
    entries = lock_entries(name)
    assert len(entries) > 80  # every transitive dependency, not the 20 direct ones
    unhashed = [n for n, (_, _, hashes) in entries.items() if hashes == 0]
    assert not unhashed, f"{name}: entries without --hash: {unhashed}"
    # nothing outside "name==version \" + hashes + comments: pip --require-hashes would refuse it
    for line in (ROOT / name).read_text().splitlines():
        assert not line or line.startswith(("#", " ")) or "==" in line, line


def test_the_locks_pin_every_direct_dependency_at_pyprojects_version():
    cpu, gpu = lock_entries("requirements.lock"), lock_entries("requirements-gpu.lock")
    for name, pins in direct_pins().items():
        for version, _ in pins:
            assert cpu[name][0] == version, f"requirements.lock: {name} {cpu[name][0]}, pyproject {version}"
            if name != "tensorflow-cpu":
                assert gpu[name][0] == version, f"requirements-gpu.lock: {name} {gpu[name][0]}, pyproject {version}"
    # the GPU lock has TensorFlow with CUDA in place of tensorflow-cpu
    assert "tensorflow-cpu" not in gpu and "tensorflow" in gpu
    assert gpu["tensorflow"][1] is None  # on every platform: the Linux x86-64 one included
    assert any(n.startswith("nvidia-cudnn") and "linux" in (m or "") for n, (_, m, _) in gpu.items())
    assert not any(n.startswith("nvidia-") for n in cpu)
    # the CPU lock: tensorflow-cpu on Linux x86-64, tensorflow where tensorflow-cpu has no wheel
    assert "x86_64" in cpu["tensorflow-cpu"][1] and "x86_64" in cpu["tensorflow"][1]


def third_party_imports(*folders: str) -> set[str]:
    """Top-level names of every module imported by the package's source files that are neither the
    standard library nor the project itself."""
    names = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    local = {p.stem for p in (ROOT / "tests").glob("*.py")} | {"pipelines", "benchmarks"}  # + tests/ helpers
    return {n for n in names if n not in sys.stdlib_module_names and n not in local}


def test_the_lock_covers_every_third_party_import_of_the_package():
    imports = third_party_imports("pipelines", "benchmarks")
    assert {"numpy", "tensorflow", "keras", "lightgbm", "gensim", "sklearn"} <= imports  # the scan finds them
    by_module = importlib.metadata.packages_distributions()
    cpu, gpu = lock_entries("requirements.lock"), lock_entries("requirements-gpu.lock")
    for module in sorted(imports):
        dists = {records._norm(d) for d in by_module.get(module, [])}
        assert dists, f"`import {module}`: no installed distribution provides it"
        dists |= {"tensorflow"} if "tensorflow-cpu" in dists else set()  # the same module, the other wheel
        assert dists & set(cpu), f"`import {module}` ({dists}) is not in requirements.lock"
        assert dists & set(gpu), f"`import {module}` ({dists}) is not in requirements-gpu.lock"


def make_dry_run(*args: str, cwd: Path = ROOT) -> str:
    out = subprocess.run(["make", "-n", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_setup_installs_the_lock_with_hashes_then_the_project_without_dependencies(tmp_path):
    venv = tmp_path / "venv"
    steps = make_dry_run("setup", f"VENV={venv}").splitlines()
    assert f"{venv}/bin/python -m pip install --quiet --require-hashes -r requirements.lock" in steps
    assert f"{venv}/bin/python -m pip install --quiet --no-deps --no-build-isolation -e ." in steps
    assert f"{venv}/bin/python -m pip check" in steps
    installs = [s for s in steps if " pip install " in s]
    assert len(installs) == 2, installs  # nothing else is installed (no unpinned pip upgrade)

    gpu = make_dry_run("setup", f"VENV={venv}", "GPU=1")
    assert "--require-hashes -r requirements-gpu.lock" in gpu and "-r requirements.lock" not in gpu


def test_the_gpu_choice_sticks_to_the_venv_and_a_switch_reinstalls(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / ".installed").write_text("requirements-gpu.lock\n")
    (venv / ".gpu").touch()
    for path in (venv / ".installed", venv / ".gpu"):  # newer than pyproject and the locks
        path.touch()
    assert "pip install" not in make_dry_run("setup", f"VENV={venv}")  # up to date, the GPU lock remembered
    assert "-r requirements.lock" in make_dry_run("setup", f"VENV={venv}", "GPU=0")  # switching back installs
    (venv / ".gpu").unlink()
    assert "-r requirements.lock" in make_dry_run("setup", f"VENV={venv}")


def test_ci_and_every_stage_go_through_the_locked_install():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("test", "setup", "data", "features", "train", "blend", "compare", "all", "bench"):
        assert re.search(rf"^{target}: \$\(VENV\)/\.installed", makefile, re.M), target
    assert re.search(r"^\$\(VENV\)/\.installed: pyproject\.toml \$\(LOCK\)", makefile, re.M)


def test_make_lock_compiles_both_locks_with_hashes_from_pyproject(tmp_path):
    venv = tmp_path / "venv"
    steps = make_dry_run("lock", f"VENV={venv}", f"LOCK_VENV={tmp_path / 'lock-venv'}").splitlines()
    compiles = [s for s in steps if "uv pip compile" in s]
    assert len(compiles) == 2, compiles
    assert not any(str(venv) in s for s in steps)  # uv stays out of the project's environment (run.json records it)
    for step, out in zip(compiles, LOCKS):
        assert "pip compile pyproject.toml" in step and step.endswith(f"-o {out}")
        for arg in ("--extra test", "--group build", "--generate-hashes", "--universal", "--python-version 3.11"):
            assert arg in step, (arg, step)
    assert "--extra gpu --no-emit-package tensorflow-cpu" in compiles[1] and "--extra gpu" not in compiles[0]


def test_environment_names_the_lock_it_matches(tmp_path):
    (tmp_path / "requirements.lock").write_text(
        "numpy==2.0.0 \\\n    --hash=sha256:aa\nfoo-bar==1.0 ; sys_platform == 'nowhere' \\\n    --hash=sha256:bb\n")
    (tmp_path / "requirements-gpu.lock").write_text(
        "numpy==2.0.0 \\\n    --hash=sha256:aa\nnvidia-x==9.0 \\\n    --hash=sha256:cc\n")
    env = records.environment(tmp_path, {"numpy": "2.0.0", "pytest": "9.0"})
    assert env["lock"] == {"file": "requirements.lock", "sha256": records.sha256_file(tmp_path / "requirements.lock"),
                           "matches": True}  # foo-bar's marker does not apply here
    assert env["packages"] == {"numpy": "2.0.0", "pytest": "9.0"} and len(env["packages_sha256"]) == 64
    # the GPU environment matches both locks: the fuller one is named
    assert records.environment(tmp_path, {"numpy": "2.0.0", "nvidia-x": "9.0"})["lock"]["file"] == "requirements-gpu.lock"
    other = records.environment(tmp_path, {"numpy": "1.26.0"})["lock"]
    assert other["matches"] is False and other["differs"] == ["numpy"]
    assert records.environment(tmp_path, {"numpy": "1.26.0"})["packages_sha256"] != env["packages_sha256"]


def test_the_real_lock_is_parsed_with_its_markers():
    pins = records.lock_pins(ROOT / "requirements.lock")
    assert pins["keras"] == "3.15.1"
    tf_cpu_here = sys.platform == "linux" and __import__("platform").machine() == "x86_64"
    assert ("tensorflow-cpu" in pins) == tf_cpu_here and ("tensorflow" in pins) != tf_cpu_here
    assert "colorama" not in pins or sys.platform == "win32"


class DeviceModel(NoisyOracleModel):
    device = {"kind": "gpu", "framework": "tensorflow", "precision": "mixed_float16", "gpus": ["Fake GPU"]}


def test_run_json_records_the_device_and_the_whole_environment(tmp_path, monkeypatch):
    point_config(monkeypatch, tmp_path)
    y = fake_targets("quora", 60)
    train_fake("quora", "sample", NoisyOracleModel("plain", y, 2, 1.0), y)
    train_fake("quora", "sample", DeviceModel("on_gpu", y, 2, 1.0), y)
    plain = read_json(config.model_dir("quora", "sample", "plain") / "run.json")
    on_gpu = read_json(config.model_dir("quora", "sample", "on_gpu") / "run.json")
    assert plain["device"] == {"kind": "cpu"}
    assert on_gpu["device"] == DeviceModel.device
    env = plain["environment"]
    assert env["packages"]["numpy"] == np.__version__ and env["packages"]["pytest"] == pytest.__version__
    assert len(env["packages"]) == len({records._norm(d.metadata["Name"]) for d in importlib.metadata.distributions()})
    assert env["lock"]["file"] in LOCKS and len(env["lock"]["sha256"]) == 64


def test_compare_flags_a_run_made_in_another_environment(tmp_path, monkeypatch):
    point_config(monkeypatch, tmp_path)
    y = fake_targets("quora", 60)
    for name in ("same", "other", "old"):
        train_fake("quora", "sample", NoisyOracleModel(name, y, 2, 1.0), y)
    path = config.model_dir("quora", "sample", "other") / "run.json"
    record = read_json(path)
    record["environment"]["packages"]["numpy"] = "1.0.0"
    record["environment"]["packages_sha256"] = "0" * 64
    write_json(path, record)
    path = config.model_dir("quora", "sample", "old") / "run.json"  # recorded before environments were
    record = read_json(path)
    del record["environment"]
    write_json(path, record)

    report = compare.compare("quora", "sample", ("same", "other", "old"), with_figures=False)
    rows = {r["model"]: r for r in report["rows"]}
    assert not rows["same"]["stale"] and not rows["old"]["stale"]
    assert rows["other"]["stale"]
    assert rows["other"]["stale_reasons"] == [f"made in another environment: numpy 1.0.0 (now {np.__version__})"
                                              + ("" if compare.current_environment()["lock"]["matches"] else
                                                 "; install the lock (`make setup`) and re-train")]
    assert any("made in another environment" in item for item in compare.attention_items(report))


def test_environment_reasons_name_python_and_added_or_removed_packages():
    now = {"python": "3.11.7", "packages": {"a": "1", "b": "2"}, "packages_sha256": "x", "lock": None}
    then = {"python": "3.11.5", "packages": {"a": "1", "c": "3"}, "packages_sha256": "y"}
    (reason,) = compare.environment_reasons(then, now)
    assert reason == "made in another environment: python 3.11.5 (now 3.11.7), b absent (now 2), c 3 (now absent)"
    assert compare.environment_reasons({**now}, now) == []
    assert compare.environment_reasons(None, now) == []
