"""Same outputs before and after a change of shape: LightGBM, the linear models and the blend (issue 12).

    python -m benchmarks identity --before=<git revision> [--root=/tmp/bench-identity]

Checks out ``--before`` in a git worktree, runs the pipeline's stage commands with that code on the real
data (``benchmarks.shared.SHARED_DATA``: the 11,587 Quora pairs, the 1,481 cervix images) and on both
built-in samples: data, features, the non-network models (quora bow_svm, bow_lr, lgbm; cervix bow_svm) and
the blend by weights with its submission CSV. The working tree's code then trains and blends on a copy of
those very data and features folders (features are built once: word2vec with several threads is not
bit-for-bit reproducible, so rebuilt features would differ in the last digits whatever the code). Every
``oof.parquet`` / ``test.parquet`` and the submission CSVs are compared byte for byte; BENCHMARKS.md section
``contract-identity`` lists the result.
"""
from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.report import update_section
from benchmarks.shared import REPO_ROOT, SHARED_DATA

QUORA_MODELS = ("bow_svm", "bow_lr", "lgbm")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks identity")
    p.add_argument("--before", required=True, help="git revision of the code before the change")
    p.add_argument("--root", default="/tmp/bench-identity")
    return p.parse_args([a for a in argv if a.startswith("--")])


def run(code: Path, root: Path, *argv: str) -> None:
    env = {**os.environ, "PIPELINES_ROOT": str(root), "PYTHONPATH": str(code)}
    subprocess.run([sys.executable, "-m", "pipelines", *argv], check=True, cwd=code, env=env)


def pipeline(code: Path, root: Path, sources: dict[str, list[str]], build: bool) -> None:
    for comp, srcs in sources.items():
        for src in srcs:
            if build:
                run(code, root, "data", "--comp", comp, "--source", src)
                run(code, root, "features", "--comp", comp, "--source", src)
            for model in (QUORA_MODELS if comp == "quora" else ("bow_svm",)):
                run(code, root, "train", "--comp", comp, "--source", src, "--model", model)
            run(code, root, "blend", "--comp", comp, "--source", src, "--method", "weights", "--name",
                f"identity-{Path(src).name}")


def prediction_files(side: Path) -> dict[str, Path]:
    """{logical name: file} of a project root's prediction parquets and identity submission CSVs, the same name
    in either run layout: ``models/<comp>/<source>/<model>/<file>`` for a model's default run (flat: the folder
    named like the model; per-model: ``<model>/default-<hash>/``) and the blend."""
    out = {}
    for path in side.glob("models/*/*/**/*.parquet"):
        rel = path.relative_to(side)
        parts = rel.parts  # models, comp, source, <model>[, <run>], file
        if "folds" in parts or any(p.startswith(".") for p in parts):
            continue
        if len(parts) == 6 and parts[4].startswith("default-"):
            rel = Path(*parts[:4], parts[5])
        elif len(parts) != 5:
            continue
        out[str(rel)] = path
    out.update({str(p.relative_to(side)): p for p in side.glob("submissions/*/identity-*.csv")})
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    before_code = root / "before-code"
    subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(before_code), args.before],
                   check=True)
    sources = {"quora": [str(SHARED_DATA / "quora"), "sample"], "cervix": [str(SHARED_DATA / "cervix"), "sample"]}
    try:
        pipeline(before_code, root / "before", sources, build=True)
        (root / "after").mkdir()
        shutil.copytree(root / "before" / "data", root / "after" / "data", symlinks=True)
        pipeline(REPO_ROOT, root / "after", sources, build=False)
    finally:
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(before_code)], check=False)
    before, after = prediction_files(root / "before"), prediction_files(root / "after")
    files = sorted(before)
    same = [f for f in files if f in after and filecmp.cmp(before[f], after[f], shallow=False)]
    differ = [str(f) for f in files if f not in same]
    lines = [f"Code before: `{args.before}`; after: the working tree. Same data and features folders for both "
             "(built once by the code before). Compared byte for byte:", "",
             f"- {len(same)} of {len(files)} files identical: " + ", ".join(f"`{f}`" for f in same)]
    lines.append(f"- differing or missing: {', '.join(differ)}" if differ else "- none differ")
    command = f"python -m benchmarks identity --before={args.before}"
    update_section("contract-identity", "\n".join(lines), command)
    print("\n".join(lines))
    return 0 if not differ else 1
