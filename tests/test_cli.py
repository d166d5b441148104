"""The command line: help without --comp, exit statuses, the console script, `make help` without colour."""
from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import pty
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

from pipelines import __main__ as cli
from pipelines import competitions
from pipelines.common.log import StageError

ROOT = Path(__file__).resolve().parent.parent


def run(argv: list[str]) -> int:
    """main()'s status, whether it returns it or argparse exits with it."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


def test_help_without_comp_lists_every_stage_and_competition(capsys):
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    for stage, line in cli.STAGE_HELP.items():
        assert f"  {stage}" in out and line in out
    assert set(cli.STAGES) == set(cli.STAGE_HELP)
    assert f"competitions: {', '.join(sorted(competitions.names()))}" in out
    assert "--comp <name> --help" in out and f"{cli.EXIT_STAGE_ERROR} stage error" in out
    assert run(["-h"]) == 0 and run(["--comp", "quora", "--help"]) == 0


@pytest.mark.parametrize("stage", sorted(cli.STAGES))
def test_stage_help_without_comp_shows_the_generic_options(stage, capsys):
    assert run([stage, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m pipelines {stage} --comp")
    assert "--source" in out and "--seed" in out and cli.STAGE_HELP[stage].split()[0] in out
    assert f"{stage} --comp <name> --help" in " ".join(out.split())  # the way to the competition's options


def test_stage_help_with_comp_still_shows_the_stages_own_options(capsys):
    assert run(["blend", "--comp", "quora", "--help"]) == 0
    assert "--method" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["train"], ["train", "--model", "lgbm"], ["blend", "--source", "sample"],
                                  ["nope", "--comp", "quora"], ["blend", "--comp", "nope"], ["--comp", "quora"],
                                  ["blend", "--comp", "quora", "--no-such-option"]])
def test_usage_errors_exit_2(argv, capsys):
    assert run(argv) == cli.EXIT_USAGE == 2
    assert "error:" in capsys.readouterr().err


def fake_stage(monkeypatch, exc: BaseException):
    module = types.ModuleType("fake_stage_for_test_cli")
    module.add_arguments = lambda parser: parser.add_argument("--fake", action="store_true")

    def main(args):
        raise exc

    module.main = main
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.STAGES, "compare", module.__name__)


def test_a_stage_error_exits_with_its_own_status(monkeypatch, capsys):
    assert cli.EXIT_STAGE_ERROR == 3 and cli.EXIT_STAGE_ERROR not in (0, 1, cli.EXIT_USAGE, cli.EXIT_INTERRUPTED)
    fake_stage(monkeypatch, StageError("the thing is missing: run make data"))
    assert run(["compare", "--comp", "quora", "--fake"]) == cli.EXIT_STAGE_ERROR
    err = capsys.readouterr().err
    assert "the thing is missing: run make data" in err and "Traceback" not in err


def test_a_full_disk_exits_3_and_another_os_error_is_not_swallowed(monkeypatch, tmp_path):
    fake_stage(monkeypatch, OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.parquet")))
    assert run(["compare", "--comp", "quora"]) == cli.EXIT_STAGE_ERROR
    fake_stage(monkeypatch, OSError(errno.EACCES, "Permission denied"))
    with pytest.raises(PermissionError):
        cli.main(["compare", "--comp", "quora"])


def test_an_interrupt_exits_130(monkeypatch):
    fake_stage(monkeypatch, KeyboardInterrupt())
    assert run(["compare", "--comp", "cervix"]) == cli.EXIT_INTERRUPTED == 130


def test_a_real_stage_error_exits_3(project_dirs):
    assert run(["data", "--comp", "quora", "--source", "/nonexistent/quora.zip"]) == cli.EXIT_STAGE_ERROR


def test_every_stage_module_exists_for_every_competition():
    for stage in cli.STAGES:
        for comp in competitions.names():
            module = cli.stage_module(stage, comp)
            assert callable(module.add_arguments) and callable(module.main), (stage, comp)
    assert cli.STAGES["train"] == "pipelines.common.train"  # one train stage for every competition


def test_pyproject_declares_the_console_script(monkeypatch, capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    target = scripts[cli.CONSOLE_SCRIPT]
    module, _, attr = target.partition(":")
    main = getattr(importlib.import_module(module), attr)
    assert main is cli.main
    # What the installed script does: sys.exit(main()) with its own name in argv[0].
    monkeypatch.setattr(sys, "argv", [f"/somewhere/bin/{cli.CONSOLE_SCRIPT}", "--help"])
    with pytest.raises(SystemExit) as exc:
        sys.exit(main())
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {cli.CONSOLE_SCRIPT} <stage> --comp")
    monkeypatch.setattr(sys, "argv", [cli.CONSOLE_SCRIPT, "train"])
    with pytest.raises(SystemExit) as exc:
        sys.exit(main())
    assert exc.value.code == 2


def make_help(stdout) -> subprocess.CompletedProcess:
    # VENV elsewhere: help needs no environment.
    return subprocess.run(["make", "-s", "help", "VENV=/nonexistent-venv"], cwd=ROOT, stdout=stdout,
                          stderr=subprocess.PIPE, timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_has_no_colour_codes_when_not_a_terminal():
    out = make_help(subprocess.PIPE)
    assert out.returncode == 0, out.stderr
    assert b"\x1b" not in out.stdout
    text = out.stdout.decode()
    for target in ("help", "setup", "data", "features", "train", "blend", "compare", "all", "test"):
        assert f"\n  {target} " in text, target


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_keeps_its_colour_on_a_terminal():
    leader, follower = pty.openpty()
    try:
        out = make_help(follower)
        os.close(follower)
        follower = None
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if follower is not None:
            os.close(follower)
    assert out.returncode == 0, out.stderr
    assert b"\x1b[36mtrain" in b"".join(chunks)
