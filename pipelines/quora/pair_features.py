"""Handcrafted features of a question pair, vectorised over chunks of pairs.

Families (float32 columns; every value finite):
  * lengths: characters (raw text) and words (normalised tokens) of each question, their absolute
    difference and min/max ratio (1 when both are empty);
  * flags of the raw text: has a digit, a question mark, a capital letter, a ``[math]`` tag; the two
    questions identical (normalised: same question id; raw: same string);
  * shared words over the two *sets* of words, with and without ``text.STOP_WORDS``:
    ``common_words`` (count), ``word_share`` = 2·common / (|W1| + |W2|), ``word_jaccard`` =
    common / |W1 ∪ W2|, and ``tfidf_word_share``, the share weighted by each word's idf (computed over
    the distinct questions); 0 when there is no word to compare;
  * same first word, same last word;
  * rapidfuzz ratio, partial_ratio, token_sort_ratio, token_set_ratio of the normalised texts
    (``process.cpdist``: pairwise, in C++, on all cores);
  * word2vec: cosine / euclidean / manhattan / Bray-Curtis / Canberra distances between the mean
    vectors of the non-stop words the model knows (both empty: 0; one empty: its vector against
    zeros, cosine distance 1);
  * ``wmd``: Word Mover's Distance (gensim's definition: unit-normalised vectors, nBOW weights,
    euclidean costs, POT's exact EMD) over the same words, only when the number of pairs (train +
    test) is at most ``wmd_max_pairs``: it costs ~50-100 µs a pair, i.e. over an hour on 2 cores at
    Kaggle's 2.75M pairs, so above the cap the column is left out (logged) and the other word2vec
    distances stand in. An empty side counts as the zero vector (distance 1 to any unit-vector
    question; 0 when both are empty) instead of gensim's infinity.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from tqdm.auto import tqdm

from pipelines.quora.text import STOP_WORDS, Tokens

log = logging.getLogger(__name__)

FUZZ_SCORERS = ("ratio", "partial_ratio", "token_sort_ratio", "token_set_ratio")


@dataclass
class PairContext:
    """What every chunk of pairs needs, built once from the distinct questions."""
    words_bin: sp.csr_matrix         # (n_q, V) 0/1 word presence
    words_bin_nostop: sp.csr_matrix  # the same without stop words
    idf: np.ndarray                  # (V,) float32, smooth idf over the distinct questions
    n_words: np.ndarray              # (n_q,) token count
    first_word: np.ndarray           # (n_q,) word id or -1
    last_word: np.ndarray
    vec_counts: sp.csr_matrix        # (n_q, V) counts of the non-stop words word2vec knows
    word_vectors: np.ndarray         # (V, dim) float32 word2vec vectors (zeros for unknown words)
    unit_vectors: np.ndarray         # the same, unit length


def prepare_context(tokens: Tokens, keyed_vectors) -> PairContext:
    n_q = tokens.n_questions
    words_bin = tokens.bow(binary=True)
    is_stop = np.fromiter((w in STOP_WORDS for w in tokens.words), dtype=bool, count=len(tokens.words))
    nostop = sp.diags((~is_stop).astype(np.float32))
    words_bin_nostop = (words_bin @ nostop).tocsr()
    words_bin_nostop.eliminate_zeros()
    df = np.bincount(words_bin.indices, minlength=len(tokens.words))
    idf = (np.log((1.0 + n_q) / (1.0 + df)) + 1.0).astype(np.float32)
    lengths = tokens.lengths
    has = lengths > 0
    first = np.full(n_q, -1, dtype=np.int64)
    last = np.full(n_q, -1, dtype=np.int64)
    first[has] = tokens.ids[tokens.offsets[:-1][has]]
    last[has] = tokens.ids[tokens.offsets[1:][has] - 1]

    dim = keyed_vectors.vector_size
    vectors = np.zeros((len(tokens.words), dim), dtype=np.float32)
    key_to_index = keyed_vectors.key_to_index
    rows = np.array([key_to_index.get(w, -1) for w in tokens.words], dtype=np.int64)
    known = rows >= 0
    vectors[known] = keyed_vectors.vectors[rows[known]]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    counts = tokens.bow(binary=False) @ sp.diags((known & ~is_stop).astype(np.float32))
    counts = counts.tocsr()
    counts.eliminate_zeros()
    return PairContext(words_bin=words_bin, words_bin_nostop=words_bin_nostop, idf=idf, n_words=lengths,
                       first_word=first, last_word=last, vec_counts=counts, word_vectors=vectors,
                       unit_vectors=unit)


def _ratio(a: np.ndarray, b: np.ndarray, empty: float) -> np.ndarray:
    lo, hi = np.minimum(a, b).astype(np.float64), np.maximum(a, b).astype(np.float64)
    return np.divide(lo, hi, out=np.full(len(a), empty), where=hi > 0)


def _safe_div(num, den) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(len(num)), where=den > 0)


def _row_sums(m: sp.csr_matrix) -> np.ndarray:
    return np.asarray(m.sum(axis=1)).ravel()


def shared_word_features(ctx: PairContext, u: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for suffix, words in (("", ctx.words_bin), ("_nostop", ctx.words_bin_nostop)):
        w1, w2 = words[u], words[v]
        both = w1.multiply(w2).tocsr()
        common = _row_sums(both)
        n1, n2 = np.diff(w1.indptr), np.diff(w2.indptr)
        out[f"common_words{suffix}"] = common
        out[f"word_share{suffix}"] = _safe_div(2 * common, n1 + n2)
        out[f"word_jaccard{suffix}"] = _safe_div(common, n1 + n2 - common)
        out[f"tfidf_word_share{suffix}"] = _safe_div(2 * (both @ ctx.idf), w1 @ ctx.idf + w2 @ ctx.idf)
    return out


def vector_distances(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Distances between rows of two (n, dim) float32 arrays of mean vectors (zero rows allowed)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    na = np.sqrt(np.einsum("ij,ij->i", a, a))
    nb = np.sqrt(np.einsum("ij,ij->i", b, b))
    dot = np.einsum("ij,ij->i", a, b)
    cosine = np.where((na == 0) & (nb == 0), 0.0, 1.0)
    ok = (na > 0) & (nb > 0)
    cosine[ok] = 1.0 - dot[ok] / (na[ok] * nb[ok])
    sum_abs = np.abs(a + b).sum(axis=1)
    total = np.abs(a) + np.abs(b)
    diff = a - b
    euclidean = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    np.abs(diff, out=diff)
    manhattan = diff.sum(axis=1)
    np.divide(diff, total, out=diff, where=total > 0)  # where total is 0 both are 0 and so is diff
    return {
        "w2v_cosine": np.clip(cosine, 0.0, 2.0),
        "w2v_euclidean": euclidean,
        "w2v_manhattan": manhattan,
        "w2v_braycurtis": _safe_div(manhattan, sum_abs),
        "w2v_canberra": diff.sum(axis=1),
    }


def mean_vectors(ctx: PairContext, rows: np.ndarray) -> np.ndarray:
    counts = ctx.vec_counts[rows]
    sums = np.asarray(counts @ ctx.word_vectors, dtype=np.float32)
    n = _row_sums(counts).astype(np.float32)
    return np.divide(sums, n[:, None], out=np.zeros_like(sums), where=n[:, None] > 0)


def fuzz_features(q1: list[str], q2: list[str], workers: int) -> dict[str, np.ndarray]:
    from rapidfuzz import fuzz, process

    return {f"fuzz_{name}": process.cpdist(q1, q2, scorer=getattr(fuzz, name), workers=workers, dtype=np.float32)
            for name in FUZZ_SCORERS}


def _emd_solver():
    """POT's exact EMD solver as f(a, b, cost) -> distance.

    ``ot.emd2`` spends ~0.8 ms a call in array-backend checks around a ~10 µs C++ solve; the
    C++ entry point (POT 0.9: ``ot.lp.emd_wrap.emd_c``) is called directly when present.
    """
    # POT probes every array backend it knows at import (TensorFlow alone costs seconds): numpy suffices.
    for backend in ("TENSORFLOW", "PYTORCH", "JAX", "CUPY"):
        os.environ.setdefault(f"POT_BACKEND_DISABLE_{backend}", "1")
    import ot

    try:
        from ot.lp.emd_wrap import emd_c

        def solve(a, b, cost):
            _, value, _, _, code = emd_c(a, b, cost, 100_000, 1)
            return float(value) if code == 1 else float(ot.emd2(a, b, cost))  # 1: optimal
    except (ImportError, TypeError):  # pragma: no cover - other POT versions
        def solve(a, b, cost):
            return float(ot.emd2(a, b, cost))
    return solve


def word_movers_distance(ctx: PairContext, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Exact WMD of each pair (see the module docstring); a Python loop around POT's C++ solver."""
    solve = _emd_solver()
    counts = ctx.vec_counts
    indptr, indices = counts.indptr, counts.indices
    # float64 throughout: the solver needs both weight vectors to sum to the same value
    row_of_entry = np.repeat(np.arange(counts.shape[0]), np.diff(indptr))
    data = counts.data.astype(np.float64)
    weights = data / np.bincount(row_of_entry, weights=data, minlength=counts.shape[0])[row_of_entry]
    unit = ctx.unit_vectors.astype(np.float64)
    out = np.zeros(len(u), dtype=np.float64)
    for i in tqdm(range(len(u)), desc="wmd", unit="pair", mininterval=2, disable=len(u) < 50_000):
        a, b = u[i], v[i]
        sa, ea, sb, eb = indptr[a], indptr[a + 1], indptr[b], indptr[b + 1]
        if sa == ea or sb == eb:
            out[i] = 0.0 if sa == ea and sb == eb else 1.0
            continue
        diff = unit[indices[sa:ea], None, :] - unit[None, indices[sb:eb], :]
        cost = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))  # exact zeros for shared words
        if cost.any():
            out[i] = solve(weights[sa:ea], weights[sb:eb], cost)
    return out


def handcrafted_features(ctx: PairContext, qid1: np.ndarray, qid2: np.ndarray, q1_text: pa.Array,
                         q2_text: pa.Array, raw_features: pd.DataFrame, with_wmd: bool, workers: int,
                         chunk_size: int = 100_000, desc: str = "pair features") -> pd.DataFrame:
    """All handcrafted columns for pairs (qid1[i], qid2[i]); ``raw_features`` from the text step."""
    n = len(qid1)
    columns: dict[str, list[np.ndarray]] = {}
    starts = range(0, n, chunk_size)
    for start in tqdm(starts, desc=desc, unit="chunk", disable=len(starts) < 2):
        stop = min(start + chunk_size, n)
        u, v = qid1[start:stop], qid2[start:stop]
        part: dict[str, np.ndarray] = {}
        n1, n2 = ctx.n_words[u], ctx.n_words[v]
        part.update({"q1_len_words": n1, "q2_len_words": n2, "len_words_diff": np.abs(n1 - n2),
                     "len_words_ratio": _ratio(n1, n2, empty=1.0)})
        part["identical"] = (u == v)
        part["same_first_word"] = (ctx.first_word[u] == ctx.first_word[v]) & (ctx.first_word[u] >= 0)
        part["same_last_word"] = (ctx.last_word[u] == ctx.last_word[v]) & (ctx.last_word[u] >= 0)
        part.update(shared_word_features(ctx, u, v))
        part.update(fuzz_features(q1_text.slice(start, stop - start).to_pylist(),
                                  q2_text.slice(start, stop - start).to_pylist(), workers))
        part.update(vector_distances(mean_vectors(ctx, u), mean_vectors(ctx, v)))
        if with_wmd:
            part["wmd"] = word_movers_distance(ctx, u, v)
        for name, values in part.items():
            columns.setdefault(name, []).append(np.asarray(values, dtype=np.float32))
    out = {name: np.concatenate(parts) if parts else np.zeros(0, np.float32) for name, parts in columns.items()}
    if not columns:  # no pairs: still the full column list
        return _empty_frame(raw_features, with_wmd)
    lc1 = raw_features["q1_len_chars"].to_numpy()
    lc2 = raw_features["q2_len_chars"].to_numpy()
    frame = {"q1_len_chars": lc1, "q2_len_chars": lc2, "len_chars_diff": np.abs(lc1 - lc2),
             "len_chars_ratio": _ratio(lc1, lc2, empty=1.0)}
    frame.update({c: raw_features[c].to_numpy() for c in raw_features.columns if c not in frame})
    frame.update(out)
    return pd.DataFrame({k: np.asarray(v, dtype=np.float32) for k, v in frame.items()})


def _empty_frame(raw_features: pd.DataFrame, with_wmd: bool) -> pd.DataFrame:
    names = ["q1_len_chars", "q2_len_chars", "len_chars_diff", "len_chars_ratio"]
    names += [c for c in raw_features.columns if c not in names]
    names += ["q1_len_words", "q2_len_words", "len_words_diff", "len_words_ratio", "identical", "same_first_word",
              "same_last_word"]
    for suffix in ("", "_nostop"):
        names += [f"common_words{suffix}", f"word_share{suffix}", f"word_jaccard{suffix}", f"tfidf_word_share{suffix}"]
    names += [f"fuzz_{s}" for s in FUZZ_SCORERS]
    names += ["w2v_cosine", "w2v_euclidean", "w2v_manhattan", "w2v_braycurtis", "w2v_canberra"]
    names += ["wmd"] if with_wmd else []
    return pd.DataFrame({name: np.zeros(0, np.float32) for name in names})
