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
    test) is at most ``wmd_max_pairs``: an exact EMD per pair is by far the slowest column, too slow
    at Kaggle's size, so above the cap the column is left out (logged) and the other word2vec
    distances stand in. An empty side counts as the zero vector (distance 1 to any unit-vector
    question; 0 when both are empty) instead of gensim's infinity.

Families added after measuring them on the real labelled rows (each one lowered LightGBM's 5-fold
CV log loss when added alone to the families above plus the graph and TF-IDF cosines):
  * ``str_*``: rapidfuzz's bit-parallel normalised similarities of the normalised texts:
    LCS subsequence, common prefix, common suffix, Jaro-Winkler, Levenshtein.
    Prefix/suffix catch the frequent "same question, different tail/head" pairs.
    (WRatio, QRatio, partial_token_{sort,set}_ratio were measured too: little gain for many times
    the cost: left out.)
  * ``qw_*``: question-type words (what, how, why, ...): the first word's type on each
    side (-1: none), whether those match, how many question words both / one side use, and for the
    eleven main ones 0/1/2 = used by neither / one / both sides. "How to X" and "Why X" are rarely
    duplicates however many words they share.
  * ``unshared_*``: the words of one question that the other lacks — count (min, max,
    sum) and idf weight (min, max, sum, the rarest one's idf), with and without stop words, and the
    idf weight of the shared words: one rare extra word ("iPhone 6" vs "iPhone 7") flips a pair.
  * ``num_*``: tokens with a digit: on each side, shared, unshared, all matching.
  * ``bigram_*`` here and ``char3_*`` (TF-IDF step; char 4-grams as well cost too much for what
    they added): Jaccard and share (2·common / sum) of the distinct word 2-grams (per pair chunk, by
    intersecting sorted (pair, n-gram code) keys) and of the char 3-grams of the TF-IDF
    vocabulary: word order and spelling variants.
  * ``same_first2`` / ``same_last2``: the first / last two words agree.
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

from pipelines.quora.text import STOP_WORDS, Tokens, word_code_bits, word_ngram_codes

log = logging.getLogger(__name__)

FUZZ_SCORERS = ("ratio", "partial_ratio", "token_sort_ratio", "token_set_ratio")
# rapidfuzz.distance metrics whose normalized_similarity is computed (0..1, 1 = identical)
STRING_METRICS = ("LCSseq", "Prefix", "Postfix", "JaroWinkler", "Levenshtein")
QUESTION_WORDS = ("what", "how", "why", "which", "who", "where", "when", "can", "is", "does", "should",
                  "do", "are", "will", "would", "could")
N_QUESTION_WORD_COLUMNS = 11  # per-word 0/1/2 columns for the first eleven (the rest only in the counts)


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
    tokens: Tokens | None = None     # for word n-grams of pair chunks
    second_word: np.ndarray | None = None       # (n_q,) word id or -1
    second_last_word: np.ndarray | None = None
    question_words: np.ndarray | None = None    # (n_q, len(QUESTION_WORDS)) int8 presence
    first_question_word: np.ndarray | None = None  # (n_q,) index in QUESTION_WORDS of the first word, or -1
    words_bin_numbers: sp.csr_matrix | None = None  # presence of tokens holding a digit


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
    second = np.full(n_q, -1, dtype=np.int64)
    second_last = np.full(n_q, -1, dtype=np.int64)
    two = lengths >= 2
    second[two] = tokens.ids[tokens.offsets[:-1][two] + 1]
    second_last[two] = tokens.ids[tokens.offsets[1:][two] - 2]

    word_index = {w: i for i, w in enumerate(tokens.words)}
    qw_code = np.full(len(tokens.words), -1, dtype=np.int64)  # word id -> index in QUESTION_WORDS
    for j, w in enumerate(QUESTION_WORDS):
        if w in word_index:
            qw_code[word_index[w]] = j
    entry_code = qw_code[words_bin.indices]
    entry_row = np.repeat(np.arange(n_q), np.diff(words_bin.indptr))
    hit = entry_code >= 0
    question_words = np.zeros((n_q, len(QUESTION_WORDS)), dtype=np.int8)
    question_words[entry_row[hit], entry_code[hit]] = 1
    first_qw = np.where(first >= 0, qw_code[np.maximum(first, 0)], -1)

    has_digit = np.fromiter((any(c.isdigit() for c in w) for w in tokens.words), dtype=bool,
                            count=len(tokens.words))
    numbers = (words_bin @ sp.diags(has_digit.astype(np.float32))).tocsr()
    numbers.eliminate_zeros()
    return PairContext(words_bin=words_bin, words_bin_nostop=words_bin_nostop, idf=idf, n_words=lengths,
                       first_word=first, last_word=last, vec_counts=counts, word_vectors=vectors,
                       unit_vectors=unit, tokens=tokens, second_word=second, second_last_word=second_last,
                       question_words=question_words, first_question_word=first_qw, words_bin_numbers=numbers)


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


def unshared_word_features(ctx: PairContext, u: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """Count and idf weight of the words one question has and the other lacks (see module doc)."""
    out = {}
    for suffix, words in (("", ctx.words_bin), ("_nostop", ctx.words_bin_nostop)):
        w1, w2 = words[u], words[v]
        both = w1.multiply(w2).tocsr()
        only1, only2 = (w1 - both).tocsr(), (w2 - both).tocsr()
        only1.eliminate_zeros()
        only2.eliminate_zeros()
        n1, n2 = np.diff(only1.indptr), np.diff(only2.indptr)
        i1, i2 = only1 @ ctx.idf, only2 @ ctx.idf
        rarest = np.maximum(_row_max(only1, ctx.idf), _row_max(only2, ctx.idf))
        out.update({f"unshared_min{suffix}": np.minimum(n1, n2), f"unshared_max{suffix}": np.maximum(n1, n2),
                    f"unshared_sum{suffix}": n1 + n2, f"unshared_idf_min{suffix}": np.minimum(i1, i2),
                    f"unshared_idf_max{suffix}": np.maximum(i1, i2), f"unshared_idf_sum{suffix}": i1 + i2,
                    f"unshared_idf_rarest{suffix}": rarest, f"shared_idf{suffix}": both @ ctx.idf})
    return out


def _row_max(binary: sp.csr_matrix, weights: np.ndarray) -> np.ndarray:
    """Largest weight among each row's columns (0 for an empty row)."""
    out = np.zeros(binary.shape[0], dtype=np.float64)
    nonempty = np.diff(binary.indptr) > 0
    if binary.nnz:
        out[nonempty] = np.maximum.reduceat(weights[binary.indices].astype(np.float64),
                                            binary.indptr[:-1][nonempty])
    return out


def number_features(ctx: PairContext, u: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """Tokens holding a digit: on each side, shared, unshared, and whether all of them match."""
    a, b = ctx.words_bin_numbers[u], ctx.words_bin_numbers[v]
    shared = _row_sums(a.multiply(b))
    n1, n2 = np.diff(a.indptr), np.diff(b.indptr)
    unshared = n1 + n2 - 2 * shared
    return {"num_q1": n1, "num_q2": n2, "num_shared": shared, "num_unshared": unshared, "num_match": unshared == 0}


def question_word_features(ctx: PairContext, u: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """Question-type words of each side and whether they agree (see module doc)."""
    f1, f2 = ctx.first_question_word[u], ctx.first_question_word[v]
    a, b = ctx.question_words[u].astype(np.int16), ctx.question_words[v].astype(np.int16)
    out = {"qw_q1_first": f1, "qw_q2_first": f2, "qw_first_match": f1 == f2,
           "qw_both": (a * b).sum(axis=1), "qw_one_side": np.abs(a - b).sum(axis=1)}
    for j, word in enumerate(QUESTION_WORDS[:N_QUESTION_WORD_COLUMNS]):
        out[f"qw_{word}"] = a[:, j] + b[:, j]
    return out


def _overlap(rows1: np.ndarray, codes1: np.ndarray, rows2: np.ndarray, codes2: np.ndarray, n: int,
             code_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct codes of side 1, of side 2, shared) per local row, from (row, code) arrays."""
    key1 = _sorted_unique((rows1.astype(np.int64) << code_bits) | codes1)
    key2 = _sorted_unique((rows2.astype(np.int64) << code_bits) | codes2)
    both = np.sort(np.concatenate([key1, key2]))
    shared = both[1:][both[1:] == both[:-1]]  # each side is distinct: a repeat is a shared key
    return (np.bincount(key1 >> code_bits, minlength=n), np.bincount(key2 >> code_bits, minlength=n),
            np.bincount(shared >> code_bits, minlength=n))


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting: numpy 2.4's hash-based np.unique is much slower on int64 keys."""
    values = np.sort(values)
    if len(values) < 2:
        return values
    return values[np.concatenate([[True], values[1:] != values[:-1]])]


def _jaccard_share(name: str, n1: np.ndarray, n2: np.ndarray, common: np.ndarray) -> dict[str, np.ndarray]:
    return {f"{name}_jaccard": _safe_div(common, n1 + n2 - common), f"{name}_share": _safe_div(2 * common, n1 + n2)}


def bigram_overlap_features(ctx: PairContext, u: np.ndarray, v: np.ndarray) -> dict[str, np.ndarray]:
    """Jaccard and share of the distinct word 2-grams of each pair (0 when neither has one)."""
    bits = word_code_bits(len(ctx.tokens.words))
    r1, c1 = word_ngram_codes(ctx.tokens, u, (2, 2))
    r2, c2 = word_ngram_codes(ctx.tokens, v, (2, 2))
    return _jaccard_share("bigram", *_overlap(r1, c1, r2, c2, len(u), bits))


def binary_overlap_features(matrix: sp.csr_matrix, u: np.ndarray, v: np.ndarray, name: str,
                            chunk_size: int = 500_000) -> dict[str, np.ndarray]:
    """Jaccard and share of the non-zero columns of rows u and v of a (TF-IDF) matrix: used on the
    char 3-gram TF-IDF the TF-IDF step has in memory anyway (n-grams in >= min_df questions only);
    building 3-/4-gram sets per pair instead was far slower."""
    n1 = np.diff(matrix.indptr)[u]
    n2 = np.diff(matrix.indptr)[v]
    common = np.zeros(len(u), dtype=np.float64)
    for start in range(0, len(u), chunk_size):
        a, b = matrix[u[start:start + chunk_size]], matrix[v[start:start + chunk_size]]
        a.data[:] = 1
        b.data[:] = 1
        common[start:start + chunk_size] = _row_sums(a.multiply(b))
    return _jaccard_share(name, n1, n2, common)


def string_similarities(q1: list[str], q2: list[str], workers: int) -> dict[str, np.ndarray]:
    from rapidfuzz import distance, process

    return {f"str_{name.lower()}": process.cpdist(q1, q2, scorer=getattr(distance, name).normalized_similarity,
                                                  workers=workers, dtype=np.float32)
            for name in STRING_METRICS}


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

    ``ot.emd2`` spends most of a call in array-backend checks around a much shorter C++ solve; the
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
        part["same_first2"] = part["same_first_word"] & (ctx.second_word[u] == ctx.second_word[v]) & (
            ctx.second_word[u] >= 0)
        part["same_last2"] = part["same_last_word"] & (ctx.second_last_word[u] == ctx.second_last_word[v]) & (
            ctx.second_last_word[u] >= 0)
        part.update(shared_word_features(ctx, u, v))
        part.update(unshared_word_features(ctx, u, v))
        part.update(number_features(ctx, u, v))
        part.update(question_word_features(ctx, u, v))
        part.update(bigram_overlap_features(ctx, u, v))
        l1 = q1_text.slice(start, stop - start).to_pylist()
        l2 = q2_text.slice(start, stop - start).to_pylist()
        part.update(fuzz_features(l1, l2, workers))
        part.update(string_similarities(l1, l2, workers))
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
              "same_last_word", "same_first2", "same_last2"]
    for suffix in ("", "_nostop"):
        names += [f"common_words{suffix}", f"word_share{suffix}", f"word_jaccard{suffix}", f"tfidf_word_share{suffix}"]
    for suffix in ("", "_nostop"):
        names += [f"unshared_{k}{suffix}" for k in ("min", "max", "sum", "idf_min", "idf_max", "idf_sum", "idf_rarest")]
        names += [f"shared_idf{suffix}"]
    names += ["num_q1", "num_q2", "num_shared", "num_unshared", "num_match"]
    names += ["qw_q1_first", "qw_q2_first", "qw_first_match", "qw_both", "qw_one_side"]
    names += [f"qw_{w}" for w in QUESTION_WORDS[:N_QUESTION_WORD_COLUMNS]]
    names += ["bigram_jaccard", "bigram_share"]
    names += [f"fuzz_{s}" for s in FUZZ_SCORERS]
    names += [f"str_{m.lower()}" for m in STRING_METRICS]
    names += ["w2v_cosine", "w2v_euclidean", "w2v_manhattan", "w2v_braycurtis", "w2v_canberra"]
    names += ["wmd"] if with_wmd else []
    return pd.DataFrame({name: np.zeros(0, np.float32) for name in names})


def lsa_pair_features(matrix: sp.csr_matrix, u: np.ndarray, v: np.ndarray, name: str, n_components: int,
                      n_detail: int, max_fit_rows: int, seed: int, chunk_size: int = 200_000) -> dict[str, np.ndarray]:
    """LSA (truncated SVD of the question TF-IDF rows) similarities of each pair.

    The SVD is fitted on at most ``max_fit_rows`` questions drawn with ``seed`` (no labels: the
    same projection for train and test), then each chunk of pairs is projected on the fly, so the
    memory stays O(chunk x n_components) even for Kaggle's ~4.8M questions. Columns: cosine and
    euclidean distance of the projections, and for the first ``n_detail`` components the |difference|
    and product of the unit-length projections (which topics the two questions share or differ in).
    An all-zero projection (empty question) gives cosine 0. On the real rows the word and char LSA
    columns were the two largest gains of the families added after the first set.
    """
    from sklearn.decomposition import TruncatedSVD

    n_rows, n_cols = matrix.shape
    k = max(1, min(n_components, n_cols - 1, n_rows - 1))
    out = {f"lsa_{name}_cosine": np.zeros(len(u), np.float32), f"lsa_{name}_euclidean": np.zeros(len(u), np.float32)}
    for j in range(n_detail):
        out[f"lsa_{name}_absdiff_{j}"] = np.zeros(len(u), np.float32)
        out[f"lsa_{name}_product_{j}"] = np.zeros(len(u), np.float32)
    if n_cols < 2 or n_rows < 2 or matrix.nnz == 0 or len(u) == 0:
        return out
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n_rows, max_fit_rows, replace=False)) if n_rows > max_fit_rows else slice(None)
    sample = matrix[fit_rows]
    # only the columns the sample uses: the others get zero loadings anyway, and at Kaggle size the
    # word 1-2-gram vocabulary (~1M+) would make the SVD's dense (k x columns) blocks gigabytes
    used = np.flatnonzero(np.bincount(sample.indices, minlength=n_cols))
    k = max(1, min(k, len(used) - 1))
    if len(used) < 2:
        return out
    svd = TruncatedSVD(k, algorithm="randomized", n_iter=5, random_state=seed).fit(sample[:, used])
    del sample
    components = np.zeros((n_cols, k), dtype=np.float32)
    components[used] = svd.components_.T
    for start in range(0, len(u), chunk_size):
        sl = slice(start, start + chunk_size)
        a = np.asarray(matrix[u[sl]] @ components, dtype=np.float32)
        b = np.asarray(matrix[v[sl]] @ components, dtype=np.float32)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        out[f"lsa_{name}_cosine"][sl] = np.clip(_safe_div(np.einsum("ij,ij->i", a, b), na * nb), -1.0, 1.0)
        out[f"lsa_{name}_euclidean"][sl] = np.linalg.norm(a - b, axis=1)
        a /= np.maximum(na, 1e-12)[:, None]
        b /= np.maximum(nb, 1e-12)[:, None]
        for j in range(min(n_detail, k)):  # a tiny corpus may have fewer components: those columns stay 0
            out[f"lsa_{name}_absdiff_{j}"][sl] = np.abs(a[:, j] - b[:, j])
            out[f"lsa_{name}_product_{j}"][sl] = a[:, j] * b[:, j]
    return out
