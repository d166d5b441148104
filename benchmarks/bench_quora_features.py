"""Quora features stage at Kaggle scale: wall time and peak RSS of every step.

    python -m benchmarks quora_features [--n-train=404290 --n-test=2345796] [--diversity=kaggle|sample]

(options in the --name=value form: the benchmarks runner treats bare words as benchmark names)

Generates (or reuses) a sample with ``pipelines.quora.data.generate_sample`` in
``data/quora/bench-kaggle/raw`` (``bench-<n_train>-<n_test>`` when scaled down), builds the features
from scratch in the sibling ``features/`` folder, then once more to time the cached no-op, and
writes the table to BENCHMARKS.md (section ``quora-features``).

``--diversity kaggle`` (default) rewrites the generated questions so that, as in Kaggle's files,
~87% of the 2 x (n_train + n_test) questions are distinct and the vocabulary is large (Zipf-drawn
words from 200k): the generator on its own re-uses a small pool of wordings, which would make every
per-question step (normalisation, TF-IDF, word2vec, graph) look ~50x cheaper than on the real data.
Labels keep the generator's values (timing only). ``--diversity sample`` times the plain sample.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import config

log = logging.getLogger(__name__)

KAGGLE_TRAIN, KAGGLE_TEST = 404_290, 2_345_796
DISTINCT_SHARE = 0.87      # Kaggle: ~4.8M distinct questions among 5.5M
SYNTH_VOCAB = 200_000


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks quora_features")
    p.add_argument("--n-train", type=int, default=KAGGLE_TRAIN)
    p.add_argument("--n-test", type=int, default=KAGGLE_TEST)
    p.add_argument("--seed", type=int, default=config.SEED)
    p.add_argument("--diversity", choices=["kaggle", "sample"], default="kaggle")
    p.add_argument("--wmd-max-pairs", type=int, default=None, help="passed to the stage (default: its own)")
    p.add_argument("--no-report", action="store_true", help="do not write BENCHMARKS.md")
    return p.parse_args(argv)


def bench_dir(n_train: int, n_test: int, diversity: str) -> Path:
    name = "bench-kaggle" if (n_train, n_test) == (KAGGLE_TRAIN, KAGGLE_TEST) else f"bench-{n_train}-{n_test}"
    return config.DATA_DIR / "quora" / (name if diversity == "kaggle" else f"{name}-plain")


def _synthetic_vocabulary(rng: np.random.Generator, n: int) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(3, 10, size=n)
    chars = letters[rng.integers(0, 26, size=int(lengths.sum()))]
    cuts = np.cumsum(lengths)[:-1]
    return np.array(["".join(w) for w in np.split(chars, cuts)], dtype=object)


def diversify(raw_dir: Path, seed: int) -> None:
    """Rewrite question1/question2 of the CSVs to Kaggle's share of distinct questions (see module doc)."""
    rng = np.random.default_rng(seed + 1)
    train = pd.read_csv(raw_dir / "train.csv", keep_default_na=False)
    test = pd.read_csv(raw_dir / "test.csv", keep_default_na=False)
    slots = 2 * (len(train) + len(test))
    bases = pd.unique(pd.concat([train.question1, train.question2, test.question1, test.question2]))
    bases = [b for b in bases if b] or ["What is this?"]
    vocab = _synthetic_vocabulary(rng, SYNTH_VOCAB)
    n_pool = max(1, int(DISTINCT_SHARE * slots))
    picks = rng.integers(0, len(bases), size=n_pool)
    ranks = np.minimum(rng.zipf(1.3, size=2 * n_pool), SYNTH_VOCAB) - 1
    pool = []
    for i, b in enumerate(picks):
        words = bases[b].split()
        if words:  # one word replaced, one inserted: a different question with the same length profile
            words[int(ranks[2 * i]) % len(words)] = vocab[ranks[2 * i]]
            words.insert(int(ranks[2 * i + 1]) % (len(words) + 1), vocab[ranks[2 * i + 1]])
        pool.append(" ".join(words))
    pool = np.array(pool, dtype=object)
    # every pool question once, the rest repeats with a heavy tail (some questions asked many times)
    repeats = (rng.pareto(1.2, size=slots - n_pool) * 50).astype(np.int64) % n_pool
    order = rng.permutation(np.concatenate([np.arange(n_pool), repeats]))
    texts = pool[order]
    n_tr = len(train)
    train["question1"], train["question2"] = texts[:n_tr], texts[n_tr:2 * n_tr]
    rest = texts[2 * n_tr:]
    test["question1"], test["question2"] = rest[: len(test)], rest[len(test):]
    from pipelines.common.io import write_csv

    write_csv(raw_dir / "train.csv", train)
    write_csv(raw_dir / "test.csv", test)


def prepare(n_train: int, n_test: int, seed: int, diversity: str) -> Path:
    from pipelines.quora.data import generate_sample

    root = bench_dir(n_train, n_test, diversity)
    raw_dir = root / "raw"
    marker = root / "bench.json"
    wanted = {"n_train": n_train, "n_test": n_test, "seed": seed, "diversity": diversity}
    if marker.exists() and json.loads(marker.read_text()) == wanted and (raw_dir / "test.csv").exists():
        log.info("reusing %s", raw_dir)
        return root
    shutil.rmtree(root, ignore_errors=True)
    t = time.perf_counter()
    generate_sample(raw_dir, n_train, n_test, seed)
    if diversity == "kaggle":
        diversify(raw_dir, seed)
    marker.write_text(json.dumps(wanted))
    log.info("generated %s in %.0f s", raw_dir, time.perf_counter() - t)
    return root


def table(timings: dict, cached_s: float, info: dict) -> str:
    lines = ["| step | wall s | CPU s | peak RSS MB |", "|---|---:|---:|---:|"]
    for step, rec in timings.items():
        if step == "total" or not rec.get("ran", True):
            continue
        lines.append(f"| {step} | {rec['wall_s']:.1f} | {rec['cpu_s']:.1f} | {rec['peak_rss_mb']:.0f} |")
    tot = timings["total"]
    lines.append(f"| **total** | **{tot['wall_s']:.1f}** | {tot['cpu_s']:.1f} | **{tot['peak_rss_mb']:.0f}** |")
    lines.append(f"| re-run (cached, nothing to do) | {cached_s:.1f} | | |")
    head = (f"{info['n_train']:,} train + {info['n_test']:,} test pairs ({info['scale']:.3g} x Kaggle), "
            f"diversity `{info['diversity']}`: {info['n_questions']:,} distinct questions, "
            f"{info['n_words']:,} distinct words; WMD column: {'yes' if info['with_wmd'] else 'no (over the cap)'}. "
            f"Peak RSS: each step's own (sampled every 20 ms); total: the process peak (getrusage).")
    return head + "\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from pipelines.common.io import read_json
    from pipelines.quora.features import build_features

    root = prepare(args.n_train, args.n_test, args.seed, args.diversity)
    out = root / "features"
    shutil.rmtree(out, ignore_errors=True)
    params = {"seed": args.seed}
    if args.wmd_max_pairs is not None:
        params["pairs"] = {"wmd_max_pairs": args.wmd_max_pairs}
    timings = build_features(root / "raw", out, params, source=str(root))
    t = time.perf_counter()
    build_features(root / "raw", out, params, source=str(root))
    cached_s = time.perf_counter() - t
    lock = read_json(out / "features-text.lock.json")
    run = read_json(out / "params.json")["run"]
    info = {"n_train": args.n_train, "n_test": args.n_test, "diversity": args.diversity,
            "scale": (args.n_train + args.n_test) / (KAGGLE_TRAIN + KAGGLE_TEST),
            "n_questions": lock["n_questions"], "n_words": lock["n_words"], "with_wmd": run["with_wmd"]}
    body = table(timings, cached_s, info)
    # read by `python -m benchmarks quora_models --scale=kaggle` for its whole-pipeline estimate
    from pipelines.common.io import write_json

    write_json(root / "bench_features.json", {**info, "total_wall_s": timings["total"]["wall_s"],
                                              "peak_rss_mb": timings["total"]["peak_rss_mb"]})
    print(body)
    if not args.no_report:
        from benchmarks.report import update_section

        command = "python -m benchmarks quora_features " + " ".join(argv)
        update_section("quora-features", body, command.strip())
    return 0


if __name__ == "__main__":
    from pipelines.common.log import setup_logging

    setup_logging()
    sys.exit(main(sys.argv[1:]))
