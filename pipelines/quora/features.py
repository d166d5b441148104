"""Quora features stage: ``python -m pipelines features --comp quora --source S [options]``.

Reads ``data/quora/<source>/raw/{train,test}.csv`` and writes, in ``data/quora/<source>/features/``:

    ids_train.npy ids_test.npy labels.npy folds.npy          ids (int64), is_duplicate (int8), fold (int8)
    pair_features_{train,test}.parquet                       float32 handcrafted + graph_* columns, finite
    tfidf_{word,char}_{q1,q2}_{train,test}.npz               L2-normalised TF-IDF rows (CSR float32)
    seq_{q1,q2}_{train,test}.npy embedding_matrix.npy vocab.json   Siamese inputs (int32, post-padded)
    word2vec.kv params.json timings.json features.lock.json

It runs as sub-steps, each cached by its own ``Stage`` lock, so changing a parameter redoes only
the steps that use it (``--w2v-epochs`` redoes word2vec, sequences and pair features, not TF-IDF):

    text       normalised text, question ids, tokens, corpus.txt, raw-text flags, ids/labels
    folds      folds.npy (n_folds, seed)
    word2vec   word2vec.kv
    tfidf      the eight TF-IDF matrices and the two TF-IDF cosine columns
    sequences  seq_*.npy, vocab.json, embedding_matrix.npy (trained / pretrained / both vectors)
    pairs      handcrafted pair features
    graph      question-graph features
    assemble   pair_features_*.parquet, params.json, timings.json and the stage lock

Also cached there for later steps and other code: ``text_{train,test}.parquet`` (id, qid1, qid2 — one
question-id space over train and test, from the normalised text — and the normalised q1, q2),
``questions.parquet`` (normalised text of each question id), ``tokens.npz`` + ``words.parquet``.

Sequences: the vocabulary is every word occurring at least ``--seq-min-count`` times over the
distinct questions, indexed 1.. from the most frequent (``vocab.json``); other words are dropped;
each question keeps its first ``--max-len`` words, zero-padded at the end. Embedding row 0 is zeros.

Every step's wall time, CPU time and peak RSS go to ``timings.json`` (and the lock), for the benchmark.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from tqdm.auto import tqdm

from pipelines import config
from pipelines.common.cv import make_folds
from pipelines.common.io import atomic_path, save_npy, save_sparse, write_json, write_parquet
from pipelines.common.log import StageError
from pipelines.common.stage import Stage
from pipelines.quora import embeddings, graph, pair_features, text
from pipelines.quora.data import TEST_COLUMNS, TRAIN_COLUMNS

log = logging.getLogger(__name__)

# Bump when a change of this code changes what a step writes: every cached step then re-runs.
FEATURES_VERSION = 2  # 2: LSA, unshared-word, question-word, number, n-gram overlap and string-metric columns

DEFAULTS: dict[str, Any] = {
    "version": FEATURES_VERSION,
    "seed": config.SEED,
    "n_folds": config.N_FOLDS,
    "text": {"normalisation_version": text.NORMALISATION_VERSION},
    "word2vec": {"vector_size": 100, "window": 5, "min_count": 2, "epochs": 5, "sg": 0, "negative": 5,
                 "sample": 1e-3},
    # char n-grams: (3, 3) keeps ~60 non-zeros a question; (2, 5) would be ~230, i.e. ~10 GB at Kaggle size
    "tfidf": {"word_ngram_range": [1, 2], "char_ngram_range": [3, 3], "min_df": 2, "max_features": None},
    "sequences": {"max_len": 30, "min_count": 2, "vectors": "trained", "pretrained_vectors": None,
                  "pretrained_format": "auto", "oov_scale": 0.1},
    "pairs": {"wmd_max_pairs": 200_000},
    # LSA of the word and char TF-IDF (pair_features.lsa_pair_features): SVD fitted on a seeded sample
    "lsa": {"n_components": 100, "detail_components": 20, "max_fit_questions": 200_000},
}
PARTS = ("train", "test")
SEQ_OUTS = [f"seq_{q}_{p}.npy" for p in PARTS for q in ("q1", "q2")]
TFIDF_OUTS = [f"tfidf_{k}_{q}_{p}.npz" for k in ("word", "char") for p in PARTS for q in ("q1", "q2")]
CONTRACT_OUTS = (["ids_train.npy", "ids_test.npy", "labels.npy", "folds.npy", "pair_features_train.parquet",
                  "pair_features_test.parquet"] + TFIDF_OUTS + SEQ_OUTS
                 + ["embedding_matrix.npy", "vocab.json", "word2vec.kv", "text_train.parquet", "text_test.parquet",
                    "params.json"])


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    g = parser.add_argument_group("quora features")
    g.add_argument("--force", action="store_true", help="rebuild every step even when the cache is up to date")
    g.add_argument("--n-folds", type=int, default=config.N_FOLDS, help="CV folds (default %(default)s)")
    g.add_argument("--w2v-dim", type=int, default=DEFAULTS["word2vec"]["vector_size"],
                   help="word2vec vector size (default %(default)s)")
    g.add_argument("--w2v-window", type=int, default=DEFAULTS["word2vec"]["window"], help="(default %(default)s)")
    g.add_argument("--w2v-min-count", type=int, default=DEFAULTS["word2vec"]["min_count"],
                   help="(default %(default)s)")
    g.add_argument("--w2v-epochs", type=int, default=DEFAULTS["word2vec"]["epochs"], help="(default %(default)s)")
    g.add_argument("--tfidf-min-df", type=int, default=DEFAULTS["tfidf"]["min_df"],
                   help="minimum number of distinct questions an n-gram occurs in (default %(default)s)")
    g.add_argument("--tfidf-max-features", type=int, default=None, help="keep the N most frequent n-grams")
    g.add_argument("--char-ngrams", type=int, nargs=2, metavar=("MIN", "MAX"),
                   default=DEFAULTS["tfidf"]["char_ngram_range"], help="char n-gram range, 1..5 (default 3 3)")
    g.add_argument("--word-ngrams", type=int, nargs=2, metavar=("MIN", "MAX"),
                   default=DEFAULTS["tfidf"]["word_ngram_range"], help="word n-gram range, 1..2 (default 1 2)")
    g.add_argument("--max-len", type=int, default=DEFAULTS["sequences"]["max_len"],
                   help="sequence length (default %(default)s)")
    g.add_argument("--seq-min-count", type=int, default=DEFAULTS["sequences"]["min_count"],
                   help="minimum count of a word in the sequence vocabulary (default %(default)s)")
    g.add_argument("--vectors", choices=["trained", "pretrained", "both"], default="trained",
                   help="embedding matrix from the trained word2vec, the pretrained file, or both concatenated")
    g.add_argument("--pretrained-vectors", type=Path, default=None,
                   help="word2vec binary (e.g. GoogleNews-vectors-negative300.bin[.gz]) or GloVe text file")
    g.add_argument("--pretrained-format", choices=embeddings.FORMATS, default="auto")
    g.add_argument("--wmd-max-pairs", type=int, default=DEFAULTS["pairs"]["wmd_max_pairs"],
                   help="compute Word Mover's Distance only when train+test pairs are at most this many "
                        "(default %(default)s)")


def params_from_args(args) -> dict:
    params = copy.deepcopy(DEFAULTS)
    params["seed"] = int(args.seed)
    params["n_folds"] = int(args.n_folds)
    params["word2vec"].update(vector_size=args.w2v_dim, window=args.w2v_window, min_count=args.w2v_min_count,
                              epochs=args.w2v_epochs)
    params["tfidf"].update(min_df=args.tfidf_min_df, max_features=args.tfidf_max_features,
                           char_ngram_range=list(args.char_ngrams), word_ngram_range=list(args.word_ngrams))
    params["sequences"].update(max_len=args.max_len, min_count=args.seq_min_count, vectors=args.vectors,
                               pretrained_vectors=str(args.pretrained_vectors) if args.pretrained_vectors else None,
                               pretrained_format=args.pretrained_format)
    params["pairs"].update(wmd_max_pairs=args.wmd_max_pairs)
    return params


def main(args) -> int:
    raw_dir = config.raw_dir("quora", args.source)
    out_dir = config.features_dir("quora", args.source)
    build_features(raw_dir, out_dir, params_from_args(args), source=args.source, force=args.force)
    return 0


# --------------------------------------------------------------------------------------------
# Parameters and timing
# --------------------------------------------------------------------------------------------

def full_params(params: dict | None) -> dict:
    """DEFAULTS overridden (one level deep) by ``params``; checked."""
    merged = copy.deepcopy(DEFAULTS)
    for key, value in (params or {}).items():
        if key not in merged:
            raise StageError(f"unknown features parameter {key!r}; known: {', '.join(merged)}")
        if isinstance(merged[key], dict):
            unknown = set(value) - set(merged[key])
            if unknown:
                raise StageError(f"unknown features parameters {key}.{sorted(unknown)}")
            merged[key].update(value)
        else:
            merged[key] = value
    seq = merged["sequences"]
    if seq["vectors"] not in ("trained", "pretrained", "both"):
        raise StageError(f"--vectors must be trained, pretrained or both, not {seq['vectors']!r}")
    if seq["vectors"] != "trained" and not seq["pretrained_vectors"]:
        raise StageError(f"--vectors {seq['vectors']} needs --pretrained-vectors <file> (word2vec .bin or GloVe .txt)")
    lo, hi = merged["tfidf"]["char_ngram_range"]
    if not 1 <= lo <= hi <= 5:
        raise StageError(f"--char-ngrams {lo} {hi}: use 1 <= MIN <= MAX <= 5")
    lo, hi = merged["tfidf"]["word_ngram_range"]
    if not 1 <= lo <= hi <= 2:
        raise StageError(f"--word-ngrams {lo} {hi}: use 1 <= MIN <= MAX <= 2")
    if merged["sequences"]["max_len"] < 1 or merged["n_folds"] < 2:
        raise StageError("--max-len must be >= 1 and --n-folds >= 2")
    return merged


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        import psutil

        return psutil.Process().memory_info().rss / 2**20


def _process_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Timings:
    """Wall time, CPU time and memory of each step: ``peak_rss_mb`` is the step's own peak RSS,
    sampled every 20 ms by a thread (getrusage's peak never goes down, so it cannot tell steps
    apart), ``process_peak_rss_mb`` the process's peak so far (getrusage)."""

    def __init__(self):
        self.steps: dict[str, dict] = {}

    @contextlib.contextmanager
    def step(self, name: str):
        record = {"ran": True}
        peak = [_rss_mb()]
        done = threading.Event()

        def sample():
            while not done.wait(0.02):
                peak[0] = max(peak[0], _rss_mb())

        sampler = threading.Thread(target=sample, name=f"rss-{name}", daemon=True)
        sampler.start()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield record
        finally:
            done.set()
            sampler.join()
            record["wall_s"] = round(time.perf_counter() - wall, 3)
            record["cpu_s"] = round(time.process_time() - cpu, 3)
            record["peak_rss_mb"] = round(max(peak[0], _rss_mb()), 1)
            record["process_peak_rss_mb"] = round(_process_peak_mb(), 1)
            self.steps[name] = record


def _run(stage: Stage, timings: Timings, name: str, fn: Callable[[], dict | None], force: bool = False) -> None:
    if not force and stage.up_to_date():
        log.info(stage.skip_message())
        timings.steps[name] = {"ran": False}
        return
    log.info("features/%s: running (%s)", name, "forced" if force else stage.why_stale())
    with timings.step(name) as record:
        extra = fn() or {}
        stage.done(extra)
    log.info("features/%s: done in %.1f s, peak RSS %.0f MB", name, record["wall_s"], record["peak_rss_mb"])


# --------------------------------------------------------------------------------------------
# Reading the raw CSVs
# --------------------------------------------------------------------------------------------

def read_pairs(path: Path, columns: list[str], source: str) -> pd.DataFrame:
    fix = f"check the file or run `make data COMP=quora SOURCE={source}` again"
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[], dtype={"question1": str, "question2": str},
                         low_memory=False)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise StageError(f"cannot read {path}: {exc}; {fix}") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise StageError(f"{path} lacks columns {missing} (has {list(df.columns)[:8]}); {fix}")
    df = df[columns]
    for col in columns:
        if col.startswith("question"):
            df[col] = df[col].fillna("").astype(str)
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().any():
            bad = int(values.isna().sum())
            raise StageError(f"{path}: {bad} rows have a non-integer {col!r} (first at row "
                             f"{int(np.flatnonzero(values.isna())[0]) + 2}); {fix}")
        df[col] = values.astype(np.int64)
    if "is_duplicate" in df and not df["is_duplicate"].isin([0, 1]).all():
        raise StageError(f"{path}: is_duplicate must be 0 or 1; {fix}")
    return df


def _raw_paths(raw_dir: Path, source: str) -> tuple[Path, Path]:
    train, test = raw_dir / "train.csv", raw_dir / "test.csv"
    if not raw_dir.is_dir() or not train.is_file() or not test.is_file():
        raise StageError(f"no raw data in {raw_dir}: run `make data COMP=quora SOURCE={source}` first")
    return train, test


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------

def raw_text_features(q1: pa.Array, q2: pa.Array) -> pd.DataFrame:
    """Features only the raw text has: length in characters and case/punctuation flags."""
    out = {"q1_len_chars": pc.utf8_length(q1), "q2_len_chars": pc.utf8_length(q2)}
    for name, pattern in (("has_digit", r"\d"), ("has_qmark", r"\?"), ("has_capital", r"\p{Lu}"),
                          ("has_math", r"\[math\]")):
        out[f"q1_{name}"] = pc.match_substring_regex(q1, pattern)
        out[f"q2_{name}"] = pc.match_substring_regex(q2, pattern)
    out["identical_raw"] = pc.equal(q1, q2)
    return pd.DataFrame({k: v.to_numpy(zero_copy_only=False).astype(np.float32) for k, v in out.items()})


def step_text(train_csv: Path, test_csv: Path, out: Path, source: str) -> dict:
    with tqdm(total=2, desc="read csv", unit="file") as bar:
        train = read_pairs(train_csv, TRAIN_COLUMNS, source)
        bar.update()
        test = read_pairs(test_csv, TEST_COLUMNS, source)
        bar.update()
    n_train, n_test = len(train), len(test)
    if n_train == 0:
        raise StageError(f"{train_csv} has no rows; check the file or run `make data COMP=quora SOURCE={source}`")
    save_npy(out / "ids_train.npy", train["id"].to_numpy(np.int64))
    save_npy(out / "ids_test.npy", test["test_id"].to_numpy(np.int64))
    save_npy(out / "labels.npy", train["is_duplicate"].to_numpy(np.int8))

    raw = {p: (text.as_large_string(df["question1"]), text.as_large_string(df["question2"]))
           for p, df in (("train", train), ("test", test))}
    del train, test
    report: dict[str, int] = {}
    all_raw = pa.concat_arrays([raw["train"][0], raw["train"][1], raw["test"][0], raw["test"][1]])
    for case, mask in text.text_flags(all_raw).items():
        report[f"{case}_questions"] = int(mask.sum())
    for part in PARTS:
        write_parquet(out / f"raw_text_features_{part}.parquet", raw_text_features(*raw[part]))

    # normalise each distinct raw text once, then give every question its id
    raw_codes, raw_distinct = text.dictionary_codes(all_raw)
    del all_raw
    normalised = text.normalise(raw_distinct, progress=True).take(pa.array(raw_codes))
    qids, questions = text.question_ids(normalised)
    del raw_codes, raw_distinct
    bounds = np.cumsum([0, n_train, n_train, n_test, n_test])
    tokens = text.tokenize(questions)

    frames = {}
    for i, (part, ids_col) in enumerate((("train", "ids_train.npy"), ("test", "ids_test.npy"))):
        a, b, c = bounds[2 * i], bounds[2 * i + 1], bounds[2 * i + 2]
        frames[part] = pd.DataFrame({
            "id": np.load(out / ids_col),
            "qid1": qids[a:b], "qid2": qids[b:c],
            "q1": pd.arrays.ArrowExtensionArray(normalised.slice(a, b - a)),
            "q2": pd.arrays.ArrowExtensionArray(normalised.slice(b, c - b)),
        })
        report[f"identical_pairs_{part}"] = int((qids[a:b] == qids[b:c]).sum())
        report[f"identical_raw_pairs_{part}"] = int(pc.sum(pc.equal(*raw[part])).as_py() or 0)
    train_qids = np.unique(qids[: bounds[2]])
    test_qids = np.unique(qids[bounds[2]:])
    report["test_questions_unseen_in_train"] = int((~np.isin(test_qids, train_qids)).sum())
    report["empty_after_normalisation_questions"] = int((tokens.lengths[qids] == 0).sum())
    for part in PARTS:
        write_parquet(out / f"text_{part}.parquet", frames[part])
    write_parquet(out / "questions.parquet", pd.DataFrame({"text": pd.arrays.ArrowExtensionArray(questions)}))
    save_tokens(out, tokens)
    with atomic_path(out / "corpus.txt") as tmp, open(tmp, "w", encoding="utf-8") as f:
        for start in range(0, len(questions), 500_000):
            f.write("\n".join(questions.slice(start, 500_000).to_pylist()) + "\n")
    for case, count in report.items():
        log.info("bad input: %s: %d", case, count)
    write_json(out / "text_report.json", report)
    log.info("text: %d train + %d test pairs, %d distinct questions, %d distinct words",
             n_train, n_test, len(questions), len(tokens.words))
    return {"report": report, "n_questions": len(questions), "n_words": len(tokens.words)}


def save_tokens(out: Path, tokens: text.Tokens) -> None:
    with atomic_path(out / "tokens.npz", suffix=".npz") as tmp:
        np.savez(tmp, ids=tokens.ids, offsets=tokens.offsets, counts=tokens.counts)
    write_parquet(out / "words.parquet", pd.DataFrame({"word": pd.Series(list(tokens.words), dtype=str)}))


def load_tokens(out: Path) -> text.Tokens:
    arrays = np.load(out / "tokens.npz")
    words = pd.read_parquet(out / "words.parquet")["word"].to_numpy(dtype=object)
    return text.Tokens(ids=arrays["ids"], offsets=arrays["offsets"], words=words, counts=arrays["counts"])


def load_pairs(out: Path, part: str, columns=("qid1", "qid2")) -> pd.DataFrame:
    return pd.read_parquet(out / f"text_{part}.parquet", columns=list(columns))


def step_folds(out: Path, params: dict) -> None:
    labels = np.load(out / "labels.npy")
    counts = np.bincount(labels, minlength=2)
    if (counts == 0).any():  # no --n-folds helps: the data itself lacks a class
        raise StageError(f"train.csv has only is_duplicate={int(np.argmax(counts))} pairs ({len(labels)} of them): "
                         f"a model needs both classes; check the file and run `make data` again")
    if counts.min() < params["n_folds"]:
        raise StageError(f"{len(labels)} train rows with {np.bincount(labels, minlength=2).tolist()} per class "
                         f"cannot make {params['n_folds']} stratified folds: use --n-folds smaller or more data")
    save_npy(out / "folds.npy", make_folds(labels, params["n_folds"], params["seed"]).astype(np.int8))


def step_word2vec(out: Path, params: dict) -> dict:
    kv = embeddings.train_word2vec(out / "corpus.txt", params["word2vec"], params["seed"], config.n_workers())
    with atomic_path(out / "word2vec.kv", suffix=".kv") as tmp:
        kv.save(str(tmp), separately=[])  # one self-contained file (no side .npy files to rename)
    log.info("word2vec: %d words x %d dims", len(kv.index_to_key), kv.vector_size)
    return {"n_words": len(kv.index_to_key), "workers": config.n_workers()}


def load_word2vec(out: Path):
    from gensim.models import KeyedVectors

    return KeyedVectors.load(str(out / "word2vec.kv"))


def _rowwise_dot(m: sp.csr_matrix, u: np.ndarray, v: np.ndarray, chunk_size: int = 500_000) -> np.ndarray:
    out = np.zeros(len(u), dtype=np.float32)
    for start in range(0, len(u), chunk_size):
        a, b = m[u[start:start + chunk_size]], m[v[start:start + chunk_size]]
        out[start:start + chunk_size] = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    return np.clip(out, 0.0, 1.0)


def step_tfidf(out: Path, params: dict) -> dict:
    p = params["tfidf"]
    pairs = {part: load_pairs(out, part) for part in PARTS}
    similarity = {part: {} for part in PARTS}
    sizes = {}
    for kind in ("word", "char"):
        if kind == "word":
            matrix, vocab = text.word_tfidf(load_tokens(out), tuple(p["word_ngram_range"]), p["min_df"],
                                            p["max_features"])
        else:
            questions = pa.array(pd.read_parquet(out / "questions.parquet")["text"].array).cast(pa.large_string())
            matrix, vocab = text.char_tfidf(questions, tuple(p["char_ngram_range"]), p["min_df"], p["max_features"])
            del questions
        sizes[kind] = {"features": int(matrix.shape[1]),
                       "nnz_per_question": round(matrix.nnz / max(matrix.shape[0], 1), 1)}
        log.info("tfidf %s: %d n-grams, %.1f non-zeros a question", kind, matrix.shape[1],
                 sizes[kind]["nnz_per_question"])
        for part in PARTS:
            u, v = pairs[part]["qid1"].to_numpy(), pairs[part]["qid2"].to_numpy()
            for q, rows in (("q1", u), ("q2", v)):
                save_sparse(out / f"tfidf_{kind}_{q}_{part}.npz", matrix[rows])
            similarity[part][f"tfidf_{kind}_cosine"] = _rowwise_dot(matrix, u, v)
            if kind == "char":
                similarity[part].update(pair_features.binary_overlap_features(matrix, u, v, "char3"))
        # one SVD over both parts' pairs: the same projection for train and test
        n_train = len(pairs["train"])
        lsa = pair_features.lsa_pair_features(
            matrix, np.concatenate([pairs[part]["qid1"].to_numpy() for part in PARTS]),
            np.concatenate([pairs[part]["qid2"].to_numpy() for part in PARTS]), kind,
            params["lsa"]["n_components"], params["lsa"]["detail_components"],
            params["lsa"]["max_fit_questions"], params["seed"])
        for name, values in lsa.items():
            similarity["train"][name] = values[:n_train]
            similarity["test"][name] = values[n_train:]
        del matrix, vocab
    for part in PARTS:
        write_parquet(out / f"tfidf_similarity_{part}.parquet", pd.DataFrame(similarity[part]))
    return {"sizes": sizes}


def sequence_vocabulary(tokens: text.Tokens, min_count: int) -> tuple[list[str], np.ndarray]:
    """Words with count >= min_count, most frequent first (ties by word); and corpus id -> index (0: dropped)."""
    keep = np.flatnonzero(tokens.counts >= min_count)
    order = sorted(keep.tolist(), key=lambda i: (-tokens.counts[i], tokens.words[i]))
    index = np.zeros(len(tokens.words), dtype=np.int32)
    index[np.asarray(order, dtype=np.int64)] = np.arange(1, len(order) + 1, dtype=np.int32)
    return [tokens.words[i] for i in order], index


def question_sequences(tokens: text.Tokens, index: np.ndarray, max_len: int) -> np.ndarray:
    """(n_questions, max_len) int32: vocabulary indices in order, words outside the vocabulary
    dropped, truncated to the first max_len, zero-padded at the end."""
    mapped = index[tokens.ids]
    row = np.repeat(np.arange(tokens.n_questions, dtype=np.int64), tokens.lengths)
    keep = mapped > 0
    mapped, row = mapped[keep], row[keep]
    kept_per_row = np.bincount(row, minlength=tokens.n_questions)
    first = np.cumsum(kept_per_row) - kept_per_row
    position = np.arange(len(row), dtype=np.int64) - first[row]
    fits = position < max_len
    seq = np.zeros((tokens.n_questions, max_len), dtype=np.int32)
    seq[row[fits], position[fits]] = mapped[fits]
    return seq


def step_sequences(out: Path, params: dict) -> dict:
    p = params["sequences"]
    tokens = load_tokens(out)
    vocab_words, index = sequence_vocabulary(tokens, p["min_count"])
    if not vocab_words:
        raise StageError(f"no word occurs {p['min_count']} times in the questions: lower --seq-min-count")
    seq = question_sequences(tokens, index, p["max_len"])
    for part in PARTS:
        pairs = load_pairs(out, part)
        for q, col in (("q1", "qid1"), ("q2", "qid2")):
            save_npy(out / f"seq_{q}_{part}.npy", seq[pairs[col].to_numpy()])
    del seq
    write_json(out / "vocab.json", {w: i + 1 for i, w in enumerate(vocab_words)})

    rng = np.random.default_rng(params["seed"])
    blocks, coverage = [], {}
    if p["vectors"] in ("trained", "both"):
        kv = load_word2vec(out)
        block, found = embeddings.embedding_block(vocab_words, list(kv.index_to_key), kv.vectors, rng, p["oov_scale"])
        blocks.append(block)
        coverage["trained"] = found
    if p["vectors"] in ("pretrained", "both"):
        words, vectors = embeddings.load_pretrained(p["pretrained_vectors"], vocab_words, p["pretrained_format"])
        block, found = embeddings.embedding_block(vocab_words, words, vectors, rng, p["oov_scale"])
        blocks.append(block)
        coverage["pretrained"] = found
    matrix = np.hstack(blocks).astype(np.float32)
    save_npy(out / "embedding_matrix.npy", matrix)
    for source, found in coverage.items():
        log.info("embedding matrix: %s vectors for %d of %d vocabulary words (%.1f%%); the rest small random",
                 source, found, len(vocab_words), 100.0 * found / len(vocab_words))
    return {"vocab_size": len(vocab_words), "embedding_dim": int(matrix.shape[1]), "coverage": coverage}


def step_pairs(out: Path, params: dict, with_wmd: bool) -> dict:
    tokens = load_tokens(out)
    ctx = pair_features.prepare_context(tokens, load_word2vec(out))
    del tokens
    for part in PARTS:
        pairs = load_pairs(out, part, columns=("qid1", "qid2", "q1", "q2"))
        raw = pd.read_parquet(out / f"raw_text_features_{part}.parquet")
        q1 = text.as_large_string(pairs["q1"])
        q2 = text.as_large_string(pairs["q2"])
        frame = pair_features.handcrafted_features(
            ctx, pairs["qid1"].to_numpy(np.int64), pairs["qid2"].to_numpy(np.int64), q1, q2, raw,
            with_wmd=with_wmd, workers=config.n_workers(), desc=f"pair features {part}")
        write_parquet(out / f"handcrafted_{part}.parquet", frame)
    return {"wmd": with_wmd}


def step_graph(out: Path) -> dict:
    pairs = [load_pairs(out, part) for part in PARTS]
    qid1 = np.concatenate([p["qid1"].to_numpy(np.int64) for p in pairs])
    qid2 = np.concatenate([p["qid2"].to_numpy(np.int64) for p in pairs])
    n_nodes = int(pd.read_parquet(out / "questions.parquet", columns=[]).shape[0])
    features = graph.graph_features(qid1, qid2, n_nodes)
    n_train = len(pairs[0])
    write_parquet(out / "graph_train.parquet", features.iloc[:n_train].reset_index(drop=True))
    write_parquet(out / "graph_test.parquet", features.iloc[n_train:].reset_index(drop=True))
    return {"n_nodes": n_nodes}


def assemble(out: Path) -> dict:
    columns = None
    fixed = {}
    for part in PARTS:
        frames = [pd.read_parquet(out / f"{name}_{part}.parquet")
                  for name in ("handcrafted", "tfidf_similarity", "graph")]
        lengths = {len(f) for f in frames}
        if len(lengths) != 1:
            raise StageError(f"{out}: cached {part} feature files disagree in length {sorted(lengths)}; "
                             "delete the features folder and re-run")
        frame = pd.concat(frames, axis=1).astype(np.float32)
        values = frame.to_numpy()
        bad = ~np.isfinite(values)
        if bad.any():  # a guard: every family is built finite; this must never silently pass NaN on
            fixed[part] = {c: int(n) for c, n in zip(frame.columns, bad.sum(axis=0)) if n}
            log.warning("pair features %s: %d non-finite values set to 0: %s", part, int(bad.sum()), fixed[part])
            frame = frame.mask(bad, 0.0)
        if columns is None:
            columns = list(frame.columns)
        elif list(frame.columns) != columns:
            raise StageError(f"{out}: train and test pair features have different columns; re-run the stage")
        write_parquet(out / f"pair_features_{part}.parquet", frame)
    return {"n_pair_features": len(columns or []), "non_finite_fixed": fixed}


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------

def build_features(raw_dir, out_dir, params: dict | None = None, source: str = "<source>",
                   force: bool = False) -> dict:
    """Build (or reuse) every Quora feature file; returns {step: timing} (also in timings.json)."""
    raw_dir, out = Path(raw_dir), Path(out_dir)
    params = full_params(params)
    train_csv, test_csv = _raw_paths(raw_dir, source)
    pretrained = params["sequences"]["pretrained_vectors"] if params["sequences"]["vectors"] != "trained" else None
    if pretrained and not Path(pretrained).is_file():
        raise StageError(f"pretrained vectors file not found: {pretrained}; pass an existing file to "
                         "--pretrained-vectors or use --vectors trained")
    raw_deps = [train_csv, test_csv] + ([Path(pretrained)] if pretrained else [])
    final = Stage("features", out, deps=raw_deps, params=params, outs=CONTRACT_OUTS)
    if not force and final.up_to_date():
        log.info(final.skip_message())
        return {"features": {"ran": False}}
    out.mkdir(parents=True, exist_ok=True)
    log.info("features: building in %s (%s)", out, "forced" if force else final.why_stale())
    timings = Timings()
    total_wall = time.perf_counter()

    version = params["version"]

    def dep(*names):
        return [out / n for n in names]

    text_outs = ["text_train.parquet", "text_test.parquet", "questions.parquet", "tokens.npz", "words.parquet",
                 "corpus.txt", "raw_text_features_train.parquet", "raw_text_features_test.parquet",
                 "text_report.json", "ids_train.npy", "ids_test.npy", "labels.npy"]
    s_text = Stage("features-text", out, deps=[train_csv, test_csv],
                   params={"text": params["text"], "version": version}, outs=text_outs)
    _run(s_text, timings, "text", lambda: step_text(train_csv, test_csv, out, source), force)

    s_folds = Stage("features-folds", out, deps=dep("labels.npy"),
                    params={"n_folds": params["n_folds"], "seed": params["seed"], "version": version},
                    outs=["folds.npy"])
    _run(s_folds, timings, "folds", lambda: step_folds(out, params), force)

    s_w2v = Stage("features-word2vec", out, deps=dep("corpus.txt"),
                  params={"word2vec": params["word2vec"], "seed": params["seed"], "version": version},
                  outs=["word2vec.kv"])
    _run(s_w2v, timings, "word2vec", lambda: step_word2vec(out, params), force)

    text_deps = dep("text_train.parquet", "text_test.parquet", "tokens.npz", "words.parquet", "questions.parquet")
    s_tfidf = Stage("features-tfidf", out, deps=text_deps,
                    params={"tfidf": params["tfidf"], "lsa": params["lsa"], "seed": params["seed"], "version": version},
                    outs=TFIDF_OUTS + ["tfidf_similarity_train.parquet", "tfidf_similarity_test.parquet"])
    _run(s_tfidf, timings, "tfidf", lambda: step_tfidf(out, params), force)

    seq_deps = text_deps + (dep("word2vec.kv") if params["sequences"]["vectors"] != "pretrained" else [])
    seq_deps += [Path(pretrained)] if pretrained else []
    s_seq = Stage("features-sequences", out, deps=seq_deps,
                  params={"sequences": params["sequences"], "seed": params["seed"], "version": version},
                  outs=SEQ_OUTS + ["vocab.json", "embedding_matrix.npy"])
    _run(s_seq, timings, "sequences", lambda: step_sequences(out, params), force)

    n_pairs = sum(len(np.load(out / f"ids_{part}.npy", mmap_mode="r")) for part in PARTS)
    with_wmd = n_pairs <= params["pairs"]["wmd_max_pairs"]
    if not with_wmd:
        log.info("pair features: Word Mover's Distance left out: %d pairs > --wmd-max-pairs %d "
                 "(an exact EMD per pair, the slowest column)", n_pairs, params["pairs"]["wmd_max_pairs"])
    s_pairs = Stage("features-pairs", out,
                    deps=text_deps + dep("raw_text_features_train.parquet", "raw_text_features_test.parquet",
                                         "word2vec.kv"),
                    params={"pairs": params["pairs"], "with_wmd": with_wmd, "version": version},
                    outs=["handcrafted_train.parquet", "handcrafted_test.parquet"])
    _run(s_pairs, timings, "pairs", lambda: step_pairs(out, params, with_wmd), force)

    s_graph = Stage("features-graph", out, deps=dep("text_train.parquet", "text_test.parquet", "questions.parquet"),
                    params={"version": version}, outs=["graph_train.parquet", "graph_test.parquet"])
    _run(s_graph, timings, "graph", lambda: step_graph(out), force)

    with timings.step("assemble"):
        summary = assemble(out)
        run_info = {"workers": config.n_workers(), "with_wmd": with_wmd, "n_pairs": n_pairs, **summary}
        write_json(out / "params.json", {"params": params, "run": run_info})
    timings.steps["total"] = {"wall_s": round(time.perf_counter() - total_wall, 3),
                              "cpu_s": round(sum(s.get("cpu_s", 0.0) for s in timings.steps.values()), 3),
                              "peak_rss_mb": round(_process_peak_mb(), 1)}
    write_json(out / "timings.json", timings.steps)
    final.done({"timings": timings.steps, "run": run_info})
    log.info("features: done in %.1f s (peak RSS %.0f MB) -> %s", timings.steps["total"]["wall_s"],
             timings.steps["total"]["peak_rss_mb"], out)
    return timings.steps
