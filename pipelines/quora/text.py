"""Question text for every Quora feature: normalisation, tokens, question ids and n-gram TF-IDF.

All choices about how raw text becomes words live HERE, in ``RULES`` (applied in order) and
``STOP_WORDS``; the one function ``normalise`` serves train, test and any future input.

Normalisation (see ``RULES``):
  * lower-case (Unicode aware); curly quotes and backticks become ``'``;
  * a few abbreviations: ``e.g.`` -> ``eg``, ``i.e.`` -> ``ie``, ``u.s.``/``u.s.a.`` -> ``usa``,
    ``u.k.`` -> ``uk``, ``e-mail`` -> ``email``, ``c++`` -> ``cplusplus``, ``c#`` -> ``csharp``;
  * contractions: ``won't`` -> ``will not``, ``can't`` -> ``can not``, ``n't`` -> `` not``,
    ``i'm`` -> ``i am``, ``'re``/``'ve``/``'ll``/``'d`` -> ``are/have/will/would``,
    ``what's``/``it's``/... -> ``what is``, ``let's`` -> ``let us``; any other ``'s`` is a possessive
    and is dropped (``india's`` -> ``india``);
  * numbers: thousands separators go (``1,000,000`` -> ``1000000``), ``5k`` -> ``5000``, a number
    glued to a unit is split (``10kg`` -> ``10 kg``, ``5am`` -> ``5 am``; ordinals like ``1st`` and
    names like ``ps4``/``3d`` are kept whole);
  * symbols become words: ``$`` dollar, ``%`` percent, ``₹`` rupee, ``€`` euro, ``£`` pound,
    ``&`` and, ``@`` at, ``+`` plus, ``=`` equal;
  * every other character that is neither a letter nor a digit (punctuation, emoji, symbols) becomes
    a space, so decimals split (``3.5`` -> ``3 5``); letters of any script are kept;
  * runs of whitespace collapse to one space, ends trimmed. Tokens are then ``text.split()``.

It runs as vectorised RE2 regex passes of pyarrow.compute over whole columns (a few seconds per
million questions), not a Python loop per question.

Question ids: one id space over train and test, from the *normalised* text (two questions that
normalise to the same text are the same question). Empty questions are not one question: each
empty question gets its own id, so the hundreds of blanks do not merge into one spurious hub.

TF-IDF (``ngram_tfidf``): a vectorised re-implementation of scikit-learn's
``TfidfVectorizer(sublinear_tf=True, smooth_idf=True, norm='l2', min_df=...)`` (the tests check it
against scikit-learn), because scikit-learn's per-document Python analyzer is too slow for
Kaggle's 5.5M questions. Word n-grams come from the token ids,
char n-grams from the UTF-8 bytes of ``" " + text + " "`` (scikit-learn's ``analyzer='char'`` on that
padded text, identical for ASCII). Document frequencies count each distinct question once.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

NORMALISATION_VERSION = 1  # bump when RULES change: it is part of the cached text's parameters

UNITS = ("kg|g|mg|lbs|lb|km|cm|mm|m|ft|gb|mb|tb|kb|ghz|mhz|hz|mp|ml|l|hrs|hr|h|min|mins|sec|yrs|yr|"
         "am|pm|mph|kmph|kw|w|v|mah|gbps|mbps|inch|inches|days|months|years")

WHITESPACE = r"[\t\n\r\f\v\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]"

# Groups of (RE2 pattern, replacement) applied in this order to lower-cased text; \1 is a group
# reference. A group runs only on the texts that match its trigger (a cheap scan), which makes the
# whole normalisation several times faster than running every rule on every text.
RULES: list[tuple[str | None, list[tuple[str, str]]]] = [
    (r"[\x{2018}\x{2019}\x{201B}\x{2032}\x{00B4}`\x{201C}\x{201D}\x{201F}\x{2033}]", [
        (r"[\x{2018}\x{2019}\x{201B}\x{2032}\x{00B4}`]", "'"),
        (r"[\x{201C}\x{201D}\x{201F}\x{2033}]", '"'),
    ]),
    (WHITESPACE, [(WHITESPACE, " ")]),
    # abbreviations (before punctuation turns their dots into spaces)
    (r"[.+#-]", [
        (r"\be\.g\.", " eg "),
        (r"\bi\.e\.", " ie "),
        (r"\bu\.s\.(a\.)?", " usa "),
        (r"\bu\.k\.", " uk "),
        (r"\be-mail\b", "email"),
        (r"\bc\+\+", " cplusplus "),
        (r"\bc#", " csharp "),
    ]),
    # contractions
    (r"'", [
        (r"\bwon't\b", "will not"),
        (r"\bcan't\b", "can not"),
        (r"\bshan't\b", "shall not"),
        (r"\bain't\b", "is not"),
        (r"n't\b", " not"),
        (r"\bi'm\b", "i am"),
        (r"'re\b", " are"),
        (r"'ve\b", " have"),
        (r"'ll\b", " will"),
        (r"'d\b", " would"),
        (r"\blet's\b", "let us"),
        (r"\b(what|where|who|how|it|that|there|here|he|she|when|why|which|this|everyone|everything|nobody|"
         r"somebody|someone|something|nothing)'s\b", r"\1 is"),
        (r"'s\b", ""),
        (r"\by'all\b", "you all"),
    ]),
    # numbers and units
    (r"\d", [
        (r"(\d),(\d\d\d)", r"\1\2"),
        (r"(\d),(\d\d\d)", r"\1\2"),  # a second pass catches every other group of 1,000,000,000
        (r"\b(\d+)k\b", r"\1000"),
        (rf"(\d)({UNITS})\b", r"\1 \2"),
    ]),
    # symbols that carry meaning
    (r"[$%\x{20B9}\x{20AC}\x{00A3}&@+=]", [
        (r"\$", " dollar "),
        (r"%", " percent "),
        (r"\x{20B9}", " rupee "),
        (r"\x{20AC}", " euro "),
        (r"\x{00A3}", " pound "),
        (r"&", " and "),
        (r"@", " at "),
        (r"\+", " plus "),
        (r"=", " equal "),
    ]),
    # the rest of punctuation, symbols and emoji; then single spaces
    (None, [
        (r"[^\p{L}\p{M}\p{N} ]+", " "),
        (r"  +", " "),
    ]),
]

# English stop words (NLTK's list, in the contraction-expanded form the rules produce).
STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not now of off on once only or other our ours ourselves out over own same she should
so some such than that the their theirs them themselves then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you
your yours yourself yourselves s t don shall may might must
""".split())

EMOJI_PATTERN = r"[\x{1F000}-\x{1FAFF}\x{2600}-\x{27BF}\x{FE0F}]"
LONG_QUESTION_CHARS = 1000


def as_large_string(values) -> pa.Array:
    """A contiguous pyarrow large_string array (nulls as "") from a list, Series, numpy or arrow array."""
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        if hasattr(values, "array") and hasattr(values.array, "__arrow_array__"):
            values = pa.array(values.array)
        else:
            values = pa.array(list(values) if not isinstance(values, (list, np.ndarray)) else values,
                              type=pa.large_string(), from_pandas=True)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], type=pa.large_string())
    values = values.cast(pa.large_string())
    if values.null_count:
        values = pc.fill_null(values, "")
    return values


def _apply_rules(texts: pa.Array, trigger: str | None, rules: list[tuple[str, str]]) -> pa.Array:
    if trigger is None:
        subset, mask = texts, None
    else:
        mask = pc.match_substring_regex(texts, trigger)
        if not pc.any(mask).as_py():
            return texts
        subset = pc.filter(texts, mask)
    for pattern, replacement in rules:
        subset = pc.replace_substring_regex(subset, pattern=pattern, replacement=replacement)
    return subset if mask is None else pc.replace_with_mask(texts, mask, subset)


def normalise(texts, chunk_size: int = 500_000, progress: bool = False) -> pa.Array:
    """Normalised text (large_string array) of each input text; see the module docstring."""
    texts = as_large_string(texts)
    parts = []
    starts = range(0, len(texts), chunk_size)
    for start in tqdm(starts, desc="normalise", unit="chunk", disable=not progress or len(starts) < 2):
        chunk = pc.utf8_lower(texts.slice(start, chunk_size))
        for trigger, rules in RULES:
            chunk = _apply_rules(chunk, trigger, rules)
        parts.append(pc.utf8_trim(chunk, characters=" "))
    if not parts:
        return pa.array([], type=pa.large_string())
    return pa.concat_arrays(parts).cast(pa.large_string())


def normalise_one(text: str) -> str:
    return normalise([text])[0].as_py()


def tokens_of(text: str) -> list[str]:
    """Tokens of one already-normalised text."""
    return text.split()


# --------------------------------------------------------------------------------------------
# Question ids and tokens
# --------------------------------------------------------------------------------------------

def dictionary_codes(values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(int64 code of each value, distinct values in order of first appearance)."""
    encoded = pc.dictionary_encode(as_large_string(values))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def question_ids(normalised: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(id of each text, text of each id): equal texts share an id, each empty text has its own."""
    codes, uniques = dictionary_codes(normalised)
    uniques = as_large_string(uniques)
    empty = np.flatnonzero(pc.equal(uniques, "").to_numpy(zero_copy_only=False))
    if empty.size:  # give every blank question its own id
        blank_rows = np.flatnonzero(codes == empty[0])
        codes[blank_rows[1:]] = len(uniques) + np.arange(len(blank_rows) - 1)
        uniques = pa.concat_arrays([uniques, pa.array([""] * (len(blank_rows) - 1), type=pa.large_string())])
    return codes, uniques


@dataclass
class Tokens:
    """Tokens of every distinct question in CSR form: question q's token ids are
    ``ids[offsets[q]:offsets[q + 1]]``, indexing ``words`` (ordered by first appearance)."""
    ids: np.ndarray       # int32 (n_tokens,)
    offsets: np.ndarray   # int64 (n_questions + 1,)
    words: np.ndarray     # object array of str (n_words,)
    counts: np.ndarray    # int64 (n_words,): occurrences over the distinct questions

    @property
    def n_questions(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def of(self, q: int) -> list[str]:
        return [self.words[i] for i in self.ids[self.offsets[q]:self.offsets[q + 1]]]

    def bow(self, binary: bool = False) -> sp.csr_matrix:
        """(n_questions, n_words) word-count (or presence) matrix."""
        # copies: sum_duplicates works in place and would scramble this object's arrays
        m = sp.csr_matrix((np.ones(len(self.ids), dtype=np.float32), self.ids.copy(), self.offsets.copy()),
                          shape=(self.n_questions, len(self.words)))
        m.sum_duplicates()
        if binary:
            m.data[:] = 1.0
        return m


def tokenize(normalised: pa.Array) -> Tokens:
    """Split normalised texts on spaces and give each distinct word an integer id."""
    lists = pc.utf8_split_whitespace(as_large_string(normalised))
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    offsets -= offsets[0]
    flat = lists.flatten()
    empty = pc.equal(flat, "").to_numpy(zero_copy_only=False)
    if empty.any():  # "" splits into [""]: drop such empty tokens
        row = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        flat = flat.filter(pa.array(~empty))
        offsets = np.concatenate([[0], np.cumsum(np.bincount(row[~empty], minlength=len(offsets) - 1))])
    encoded = pc.dictionary_encode(flat)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    ids = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    words = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    counts = np.bincount(ids, minlength=len(words)).astype(np.int64)
    return Tokens(ids=ids, offsets=offsets.astype(np.int64), words=words, counts=counts)


def gather_rows(offsets: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated CSR rows ``rows``: (local row index of each value, values)."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    local = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    first = np.cumsum(lengths) - lengths
    positions = np.repeat(starts - first, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    return local, values[positions]


# --------------------------------------------------------------------------------------------
# N-gram TF-IDF (scikit-learn semantics, vectorised)
# --------------------------------------------------------------------------------------------

CHAR_CODE_BITS = 43  # (n << 40) | up to 5 bytes
KEY_BITS = 62        # (row << code_bits) | code must stay a non-negative int64


def word_code_bits(n_words: int) -> int:
    return int(n_words + n_words * n_words).bit_length()


def word_ngram_codes(tokens: Tokens, rows: np.ndarray, ngram_range: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(local row, int64 code) of every word n-gram of the given questions (n <= 2 supported)."""
    lo, hi = ngram_range
    if not 1 <= lo <= hi <= 2:
        raise ValueError(f"word n-grams support ranges within (1, 2), got {ngram_range}")
    local, ids = gather_rows(tokens.offsets, tokens.ids, rows)
    ids = ids.astype(np.int64)
    n_words = len(tokens.words)
    out_rows, out_codes = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    if lo == 1:
        out_rows.append(local)
        out_codes.append(ids)
    if hi == 2 and len(ids) > 1:
        same = local[1:] == local[:-1]
        out_rows.append(local[1:][same])
        out_codes.append(n_words + ids[:-1][same] * n_words + ids[1:][same])
    return np.concatenate(out_rows), np.concatenate(out_codes)


def char_ngram_codes(texts: pa.Array, ngram_range: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(row, int64 code) of every byte n-gram of ``" " + text + " "`` for each text (n <= 5)."""
    lo, hi = ngram_range
    if not 1 <= lo <= hi <= 5:
        raise ValueError(f"char n-grams support ranges within (1, 5), got {ngram_range}")
    space, nothing = pa.scalar(" ", pa.large_string()), pa.scalar("", pa.large_string())
    padded = pc.binary_join_element_wise(space, as_large_string(texts), space, nothing).cast(pa.large_binary())
    padded = pa.concat_arrays([padded])  # fresh buffers, offset 0
    buffers = padded.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[: len(padded) + 1]
    data = (np.frombuffer(buffers[2], dtype=np.uint8)[: offsets[-1]] if buffers[2] is not None
            else np.zeros(0, np.uint8)).astype(np.int64)
    row_of_byte = np.repeat(np.arange(len(padded), dtype=np.int64), np.diff(offsets))
    # bytes left in the text from each position on: an n-gram may start where at least n are left
    left = offsets[1:][row_of_byte] - np.arange(len(data), dtype=np.int64)
    out_rows, out_codes = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for n in range(lo, hi + 1):
        m = len(data) - n + 1
        if m <= 0:
            continue
        code = np.full(m, n << 40, dtype=np.int64)  # the length tags the code: n-grams of different n never collide
        for k in range(n):
            code |= data[k:k + m] << (8 * (n - 1 - k))
        valid = left[:m] >= n
        out_rows.append(row_of_byte[:m][valid])
        out_codes.append(code[valid])
    return np.concatenate(out_rows), np.concatenate(out_codes)


def _runs(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first index, length) of each run of equal values in a sorted array."""
    if len(sorted_values) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.flatnonzero(sorted_values[1:] != sorted_values[:-1]) + 1])
    return starts, np.diff(np.append(starts, len(sorted_values)))


def _distinct_per_row(rows: np.ndarray, codes: np.ndarray, code_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (row, code) pairs with their counts, sorted by row then code (one int64 sort)."""
    key = (rows << code_bits) | codes
    key.sort()
    starts, counts = _runs(key)
    key = key[starts]
    return key >> code_bits, key & ((1 << code_bits) - 1), counts


@dataclass
class TfidfVocabulary:
    codes: np.ndarray  # sorted int64 n-gram codes kept (df >= min_df)
    idf: np.ndarray    # float32 idf of each kept code
    n_docs: int
    distinct_pairs: int = 0  # (document, n-gram) pairs before min_df: an upper bound of the non-zeros


def fit_tfidf(code_chunks, n_docs: int, code_bits: int, min_df: int,
              max_features: int | None = None) -> TfidfVocabulary:
    """Document frequencies over chunks of (row, code) arrays -> the kept vocabulary and its idf."""
    all_codes = np.zeros(0, np.int64)
    all_df = np.zeros(0, np.int64)
    distinct_pairs = 0
    for rows, codes in code_chunks:
        _, doc_codes, _ = _distinct_per_row(rows, codes, code_bits)
        distinct_pairs += len(doc_codes)
        doc_codes.sort()
        starts, df = _runs(doc_codes)
        # merge two sorted runs (a stable sort of two sorted runs is a linear merge)
        merged = np.concatenate([all_codes, doc_codes[starts]])
        order = np.argsort(merged, kind="stable")
        merged = merged[order]
        merged_df = np.concatenate([all_df, df])[order]
        starts, _ = _runs(merged)
        all_codes, all_df = merged[starts], np.add.reduceat(merged_df, starts) if len(starts) else merged_df
    keep = all_df >= min_df
    if max_features is not None and keep.sum() > max_features:
        order = np.lexsort((all_codes, -all_df))  # most frequent first; ties by code, deterministic
        keep = np.zeros_like(keep)
        keep[order[:max_features]] = True
    codes, df = all_codes[keep], all_df[keep]
    idf = (np.log((1.0 + n_docs) / (1.0 + df)) + 1.0).astype(np.float32)
    return TfidfVocabulary(codes=codes, idf=idf, n_docs=n_docs, distinct_pairs=distinct_pairs)


def transform_tfidf(rows: np.ndarray, codes: np.ndarray, n_rows: int, vocab: TfidfVocabulary) -> sp.csr_matrix:
    """L2-normalised sublinear TF-IDF rows (float32 CSR) of (row, code) arrays."""
    n_cols = len(vocab.codes)
    if n_cols:
        cols = np.searchsorted(vocab.codes, codes)
        np.minimum(cols, n_cols - 1, out=cols)
        known = vocab.codes[cols] == codes
        rows, cols = rows[known], cols[known]
    else:
        rows, cols = rows[:0], codes[:0]
    r, c, counts = _distinct_per_row(rows, cols, max(n_cols, 1).bit_length())
    c = c.astype(np.int32)
    values = ((1.0 + np.log(counts)) * vocab.idf[c]).astype(np.float32)
    norms = np.sqrt(np.bincount(r, weights=values.astype(np.float64) ** 2, minlength=n_rows))
    values /= np.maximum(norms[r], 1e-12).astype(np.float32)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
    return sp.csr_matrix((values, c, indptr), shape=(n_rows, n_cols))


def ngram_tfidf(code_fn, n_docs: int, code_bits: int, min_df: int, max_features: int | None = None,
                chunk_size: int = 100_000, desc: str = "tfidf") -> tuple[sp.csr_matrix, TfidfVocabulary]:
    """TF-IDF matrix of ``n_docs`` documents whose n-gram codes ``code_fn(start, stop)`` returns
    as (local row, code); two vectorised passes in chunks (document frequencies, then rows)."""
    if code_bits > KEY_BITS - 10:
        raise ValueError(f"n-gram codes of {code_bits} bits leave too few bits for row numbers")
    chunk_size = max(1, min(chunk_size, 1 << (KEY_BITS - code_bits)))
    starts = list(range(0, n_docs, chunk_size))

    def chunks(label):
        for start in tqdm(starts, desc=f"{desc} {label}", unit="chunk", disable=len(starts) < 2):
            yield start, code_fn(start, min(start + chunk_size, n_docs))

    vocab = fit_tfidf((rc for _, rc in chunks("df")), n_docs, code_bits, min_df, max_features)
    # fill preallocated arrays chunk by chunk: no vstack, whose copy would double the peak memory
    data = np.empty(vocab.distinct_pairs, dtype=np.float32)
    indices = np.empty(vocab.distinct_pairs, dtype=np.int32)
    indptr = np.zeros(n_docs + 1, dtype=np.int64)
    nnz = 0
    for start, (rows, codes) in chunks("rows"):
        stop = min(start + chunk_size, n_docs)
        part = transform_tfidf(rows, codes, stop - start, vocab)
        data[nnz:nnz + part.nnz] = part.data
        indices[nnz:nnz + part.nnz] = part.indices
        indptr[start + 1:stop + 1] = nnz + part.indptr[1:]
        nnz += part.nnz
    if nnz < 0.8 * len(data):  # min_df dropped much: give the rest back
        data, indices = data[:nnz].copy(), indices[:nnz].copy()
    matrix = sp.csr_matrix((data[:nnz], indices[:nnz], indptr), shape=(n_docs, len(vocab.codes)))
    return matrix, vocab


def word_tfidf(tokens: Tokens, ngram_range=(1, 2), min_df: int = 2, max_features: int | None = None,
               chunk_size: int = 200_000) -> tuple[sp.csr_matrix, TfidfVocabulary]:
    def code_fn(start, stop):
        return word_ngram_codes(tokens, np.arange(start, stop), tuple(ngram_range))

    return ngram_tfidf(code_fn, tokens.n_questions, word_code_bits(len(tokens.words)), min_df, max_features,
                       chunk_size, desc="tfidf word")


def char_tfidf(texts: pa.Array, ngram_range=(3, 3), min_df: int = 2, max_features: int | None = None,
               chunk_size: int = 100_000) -> tuple[sp.csr_matrix, TfidfVocabulary]:
    texts = as_large_string(texts)

    def code_fn(start, stop):
        return char_ngram_codes(texts.slice(start, stop - start), tuple(ngram_range))

    return ngram_tfidf(code_fn, len(texts), CHAR_CODE_BITS, min_df, max_features, chunk_size, desc="tfidf char")


# --------------------------------------------------------------------------------------------
# Bad-input census (logged by the stage, one line per case)
# --------------------------------------------------------------------------------------------

def text_flags(raw: pa.Array) -> dict[str, np.ndarray]:
    """Boolean masks of the awkward cases in raw texts."""
    raw = as_large_string(raw)
    stripped = pc.utf8_trim_whitespace(raw)
    return {
        "empty": pc.equal(raw, "").to_numpy(zero_copy_only=False),
        "whitespace_only": pc.and_(pc.not_equal(raw, ""), pc.equal(stripped, "")).to_numpy(zero_copy_only=False),
        "non_ascii": pc.invert(pc.string_is_ascii(raw)).to_numpy(zero_copy_only=False),
        "emoji": pc.match_substring_regex(raw, EMOJI_PATTERN).to_numpy(zero_copy_only=False),
        "long": (pc.utf8_length(raw).to_numpy(zero_copy_only=False) > LONG_QUESTION_CHARS),
    }
