"""Quora text: normalisation rules, tokens, question ids and the vectorised TF-IDF (vs scikit-learn)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from pipelines.quora import text


@pytest.mark.parametrize("raw, expected", [
    ("What's the best way?", "what is the best way"),
    ("I can't, won't, don't.", "i can not will not do not"),
    ("I'm sure they're here and we've seen it; you'll see, he'd go",
     "i am sure they are here and we have seen it you will see he would go"),
    ("Let's go, y'all", "let us go you all"),
    ("It’s India’s best", "it is india best"),          # curly apostrophes; possessive dropped
    ("It costs 1,000 or 1,000,000,000 rupees", "it costs 1000 or 1000000000 rupees"),
    ("I earn 5k a month", "i earn 5000 a month"),
    ("10kg at 5am, 3.5GHz and 2GB", "10 kg at 5 am 3 5 ghz and 2 gb"),
    ("1st place for my ps4 in 3d", "1st place for my ps4 in 3d"),  # ordinals and names stay whole
    ("$5 is 50% off & more @ home + tax = ok", "dollar 5 is 50 percent off and more at home plus tax equal ok"),
    ("₹100 vs €5 vs £3", "rupee 100 vs euro 5 vs pound 3"),
    ("C++ vs C#, e.g. in the U.S.A. or U.K. by e-mail", "cplusplus vs csharp eg in the usa or uk by email"),
    ("Is 😀 good?!?", "is good"),
    ("  Tabs\tand\nnew lines\u00a0here  ", "tabs and new lines here"),
    ("नमस्ते दुनिया? Café", "नमस्ते दुनिया café"),  # letters and marks of any script are kept
    ("", ""),
    ("   ", ""),
    ("???", ""),
])
def test_normalise_cases(raw, expected):
    assert text.normalise_one(raw) == expected


def test_normalise_is_one_function_for_any_input_shape():
    import pandas as pd

    values = ["What's up?", None, "I'm here"]
    from_list = text.normalise(values).to_pylist()
    from_series = text.normalise(pd.Series(values)).to_pylist()
    from_arrow = text.normalise(pa.array(values)).to_pylist()
    assert from_list == from_series == from_arrow == ["what is up", "", "i am here"]
    # chunking does not change the result
    assert text.normalise(values * 7, chunk_size=4).to_pylist() == from_list * 7


def test_question_ids_share_equal_texts_but_not_blanks():
    ids, questions = text.question_ids(pa.array(["a b", "", "c", "a b", "", "c"], type=pa.large_string()))
    assert ids[0] == ids[3] and ids[2] == ids[5]
    assert ids[1] != ids[4]  # two blank questions are two questions
    assert [questions[i].as_py() for i in ids] == ["a b", "", "c", "a b", "", "c"]
    assert len(questions) == 4


def test_tokenize_csr_and_empty_texts():
    tokens = text.tokenize(pa.array(["what is the step by step", "", "how can i", "what is"]))
    assert tokens.of(0) == ["what", "is", "the", "step", "by", "step"]
    assert tokens.of(1) == []
    assert tokens.of(3) == ["what", "is"]
    assert tokens.lengths.tolist() == [6, 0, 3, 2]
    counts = dict(zip(tokens.words, tokens.counts))
    assert counts["step"] == 2 and counts["what"] == 2 and "" not in counts
    bow = tokens.bow()
    assert bow[0, list(tokens.words).index("step")] == 2
    assert tokens.of(0) == ["what", "is", "the", "step", "by", "step"]  # bow() left the tokens intact


def test_gather_rows():
    offsets = np.array([0, 2, 2, 5])
    values = np.array([10, 11, 20, 21, 22])
    local, got = text.gather_rows(offsets, values, np.array([2, 0, 1, 2]))
    assert got.tolist() == [20, 21, 22, 10, 11, 20, 21, 22]
    assert local.tolist() == [0, 0, 0, 1, 1, 3, 3, 3]


CORPUS = [text.normalise_one(q) for q in [
    "How do I learn Python quickly?", "What is the best way to learn Python?", "How do I learn Java?",
    "Is chess hard to learn?", "How difficult is chess?", "Why is the sky blue?", "Why is the sea blue?",
    "What is the capital of France?", "What is the capital city of France?", "How do I cook rice?",
    "What's the best way to cook rice?", "", "Python or Java: which one first?", "a", "learn learn learn"]]


def _dense_gram(m):
    return (m @ m.T).toarray()


@pytest.mark.parametrize("ngram_range, min_df", [((1, 1), 1), ((1, 2), 1), ((1, 2), 2), ((2, 2), 1)])
def test_word_tfidf_matches_sklearn(ngram_range, min_df):
    tokens = text.tokenize(pa.array(CORPUS))
    ours, vocab = text.word_tfidf(tokens, ngram_range, min_df, chunk_size=4)

    def analyzer(s):
        w = s.split()
        grams = []
        for n in range(ngram_range[0], ngram_range[1] + 1):
            grams += [" ".join(w[i:i + n]) for i in range(len(w) - n + 1)]
        return grams

    ref = TfidfVectorizer(analyzer=analyzer, min_df=min_df, sublinear_tf=True, dtype=np.float32).fit_transform(CORPUS)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert ours.nnz == ref.nnz
    # same vectors up to column order: all pairwise cosines agree
    np.testing.assert_allclose(_dense_gram(ours), _dense_gram(ref), atol=1e-5)
    np.testing.assert_allclose(np.sort(ours.data), np.sort(ref.data), atol=1e-6)


@pytest.mark.parametrize("ngram_range", [(3, 3), (2, 5), (1, 2)])
def test_char_tfidf_matches_sklearn_char_analyzer_on_padded_text(ngram_range):
    ours, _ = text.char_tfidf(pa.array(CORPUS), ngram_range, min_df=2, chunk_size=5)
    ref = TfidfVectorizer(analyzer="char", ngram_range=ngram_range, min_df=2, sublinear_tf=True, lowercase=False,
                          dtype=np.float32).fit_transform([f" {t} " for t in CORPUS])
    assert ours.shape == ref.shape
    np.testing.assert_allclose(_dense_gram(ours), _dense_gram(ref), atol=1e-5)


def test_tfidf_max_features_keeps_most_frequent():
    tokens = text.tokenize(pa.array(CORPUS))
    full, vocab_full = text.word_tfidf(tokens, (1, 1), 1)
    top, vocab_top = text.word_tfidf(tokens, (1, 1), 1, max_features=3)
    assert top.shape[1] == 3
    df = np.bincount(tokens.bow(binary=True).indices, minlength=len(tokens.words))
    kept_df = sorted(df[vocab_top.codes].tolist(), reverse=True)
    assert kept_df == sorted(df.tolist(), reverse=True)[:3]
    norms = np.sqrt(np.asarray(top.multiply(top).sum(axis=1)).ravel())
    assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))


def test_char_codes_reject_unsupported_ranges():
    with pytest.raises(ValueError):
        text.char_ngram_codes(pa.array(["abc"]), (2, 6))
    with pytest.raises(ValueError):
        text.word_tfidf(text.tokenize(pa.array(["a b c"])), (1, 3), 1)


def test_text_flags_count_bad_inputs():
    flags = text.text_flags(pa.array(["", "  \t", "café", "hi 😀", "x" * 10_000, "plain"]))
    assert flags["empty"].tolist() == [True, False, False, False, False, False]
    assert flags["whitespace_only"].tolist() == [False, True, False, False, False, False]
    assert flags["non_ascii"].tolist() == [False, False, True, True, False, False]
    assert flags["emoji"].tolist() == [False, False, False, True, False, False]
    assert flags["long"].tolist() == [False, False, False, False, True, False]
