"""Test fixtures for the Quora models: a tiny features folder in exactly the features stage's format.

The pairs carry a learnable signal: duplicates share most of their tokens, non-duplicates few, and
the handcrafted/graph columns are noisy functions of the label, so every model beats the prior.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.common.cv import make_folds
from pipelines.common.io import save_npy, save_sparse, write_csv, write_json, write_parquet

VOCAB_SIZE = 120
MAX_LEN = 12
EMBED_DIM = 8


def _questions(rng: np.random.Generator, labels: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    q1s, q2s = [], []
    for label in labels:
        n = int(rng.integers(4, MAX_LEN + 1))
        q1 = rng.integers(1, VOCAB_SIZE + 1, size=n)
        if label:  # a paraphrase: the same tokens with one or two changed and a little reordering
            q2 = q1.copy()
            for pos in rng.choice(n, size=int(rng.integers(1, 3)), replace=False):
                q2[pos] = rng.integers(1, VOCAB_SIZE + 1)
            if rng.random() < 0.5:
                i, j = rng.choice(n, size=2, replace=False)
                q2[i], q2[j] = q2[j], q2[i]
        else:  # another question on a related topic: a couple of shared tokens at most
            m = int(rng.integers(4, MAX_LEN + 1))
            q2 = rng.integers(1, VOCAB_SIZE + 1, size=m)
            shared = int(rng.integers(0, 3))
            q2[:shared] = q1[:shared]
        q1s.append(q1)
        q2s.append(q2)
    return q1s, q2s


def _padded(questions: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((len(questions), MAX_LEN), dtype=np.int32)
    for i, q in enumerate(questions):
        q = q[:MAX_LEN]
        out[i, MAX_LEN - len(q):] = q  # pre-padding, as Keras' pad_sequences does by default
    return out


def _tfidf(questions: list[np.ndarray], n_cols: int, idf: np.ndarray, hashed_bigrams: bool) -> sp.csr_matrix:
    rows, cols = [], []
    for i, q in enumerate(questions):
        tokens = (q[:-1] * 31 + q[1:]) % n_cols if hashed_bigrams else q % n_cols
        rows.extend([i] * len(tokens))
        cols.extend(tokens.tolist())
    counts = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(questions), n_cols))
    counts.sum_duplicates()
    tfidf = counts.multiply(idf[None, :]).tocsr().astype(np.float32)
    norms = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / norms).dot(tfidf), dtype=np.float32)


def _pair_features(rng: np.random.Generator, q1s, q2s, labels: np.ndarray | None) -> pd.DataFrame:
    shared = np.array([len(set(a.tolist()) & set(b.tolist())) / len(set(a.tolist()) | set(b.tolist()))
                       for a, b in zip(q1s, q2s)])
    len_diff = np.array([abs(len(a) - len(b)) for a, b in zip(q1s, q2s)], dtype=float)
    latent = shared if labels is None else 0.7 * shared + 0.3 * labels
    n = len(q1s)
    return pd.DataFrame({
        "word_share": shared,
        "len_diff": len_diff,
        "fuzz_ratio": np.clip(shared * 100 + rng.normal(0, 15, n), 0, 100),
        "q1_len_chars": np.array([5 * len(a) for a in q1s], dtype=float),  # a q1_*/q2_* pair, as the real set has
        "q2_len_chars": np.array([5 * len(b) for b in q2s], dtype=float),
        "graph_q1_freq": rng.poisson(1 + 3 * latent),
        "graph_q2_freq": rng.poisson(1 + 2 * latent),
        "graph_common_neighbours": rng.poisson(2 * latent),
        "noise": rng.normal(size=n),
    }).astype(np.float32)


def write_fake_features(features_dir: Path, n_train: int = 300, n_test: int = 90, n_folds: int = 3,
                        seed: int = 0) -> Path:
    """Write a complete fake Quora features folder (the features stage's file set) and return it."""
    features_dir = Path(features_dir)
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_train) < 0.37).astype(np.int8)
    test_labels = (rng.random(n_test) < 0.37).astype(np.int8)
    q1_train, q2_train = _questions(rng, labels)
    q1_test, q2_test = _questions(rng, test_labels)
    # Label noise, as in the real data (annotators disagree): no model can be perfect.
    flip = rng.random(n_train) < 0.08
    labels = np.where(flip, 1 - labels, labels).astype(np.int8)

    save_npy(features_dir / "ids_train.npy", np.arange(n_train, dtype=np.int64))
    save_npy(features_dir / "ids_test.npy", np.arange(n_test, dtype=np.int64))
    save_npy(features_dir / "labels.npy", labels)
    save_npy(features_dir / "folds.npy", make_folds(labels, n_folds, seed=42))

    write_parquet(features_dir / "pair_features_train.parquet", _pair_features(rng, q1_train, q2_train, labels))
    write_parquet(features_dir / "pair_features_test.parquet", _pair_features(rng, q1_test, q2_test, None))

    for kind, n_cols, bigrams in (("word", VOCAB_SIZE + 1, False), ("char", 97, True)):
        idf = 1.0 + rng.random(n_cols).astype(np.float32)
        for part, (q1s, q2s) in (("train", (q1_train, q2_train)), ("test", (q1_test, q2_test))):
            save_sparse(features_dir / f"tfidf_{kind}_q1_{part}.npz", _tfidf(q1s, n_cols, idf, bigrams))
            save_sparse(features_dir / f"tfidf_{kind}_q2_{part}.npz", _tfidf(q2s, n_cols, idf, bigrams))

    save_npy(features_dir / "seq_q1_train.npy", _padded(q1_train))
    save_npy(features_dir / "seq_q2_train.npy", _padded(q2_train))
    save_npy(features_dir / "seq_q1_test.npy", _padded(q1_test))
    save_npy(features_dir / "seq_q2_test.npy", _padded(q2_test))
    embedding = rng.normal(0, 0.5, size=(VOCAB_SIZE + 1, EMBED_DIM)).astype(np.float32)
    embedding[0] = 0.0
    save_npy(features_dir / "embedding_matrix.npy", embedding)
    write_json(features_dir / "vocab.json", {f"w{i}": i for i in range(1, VOCAB_SIZE + 1)})
    write_json(features_dir / "features.lock.json", {"stage": "features", "fake": True, "seed": seed})
    return features_dir


def write_fake_raw(raw_dir: Path, n_test: int, with_sample_submission: bool = True) -> Path:
    """The raw files the submission checks read: test.csv and (optionally) sample_submission.csv."""
    raw_dir = Path(raw_dir)
    ids = np.arange(n_test)
    write_csv(raw_dir / "test.csv", pd.DataFrame({"test_id": ids, "question1": "q1?", "question2": "q2?"}))
    if with_sample_submission:
        write_csv(raw_dir / "sample_submission.csv", pd.DataFrame({"test_id": ids, "is_duplicate": 1}))
    return raw_dir


@contextlib.contextmanager
def interrupted_after_first_checkpoint():
    """Inside it, a Keras fit (pipelines/common/keras_fit.py) raises KeyboardInterrupt, as Ctrl-C would,
    right after its first checkpoint write (after epoch 1 with ``checkpoint_every_s=0``)."""
    from pipelines.common.checkpoint import CheckpointClock

    real_written = CheckpointClock.written

    def written(clock):
        real_written(clock)
        raise KeyboardInterrupt  # Ctrl-C once the checkpoint is on disk

    CheckpointClock.written = written
    try:
        yield
    finally:
        CheckpointClock.written = real_written
