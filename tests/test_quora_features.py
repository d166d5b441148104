"""Quora features stage: pair features with known values, pretrained vectors, the output contract,
caching, bad input, the CLI and a smoke run on real rows."""
from __future__ import annotations

import gzip
import json
import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.sparse as sp

from pipelines import config
from pipelines.common.log import StageError
from pipelines.quora import embeddings, features, pair_features, text

import quora_helpers as qh  # noqa: E402  (tests/ is on sys.path, as for the other helpers)


# --------------------------------------------------------------------------------------------
# Pair features on hand-made pairs
# --------------------------------------------------------------------------------------------

def _keyed_vectors(words, dim=4, seed=0):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=dim)
    kv.add_vectors(list(words), np.random.default_rng(seed).normal(size=(len(words), dim)).astype(np.float32))
    return kv


def _pair_frame(q1s, q2s, with_wmd=True):
    raw1, raw2 = pa.array(q1s, type=pa.large_string()), pa.array(q2s, type=pa.large_string())
    n1, n2 = text.normalise(raw1), text.normalise(raw2)
    qids, questions = text.question_ids(pa.concat_arrays([n1, n2]))
    tokens = text.tokenize(questions)
    kv = _keyed_vectors([w for w in tokens.words if w not in ("zzz",)])  # "zzz": a word without a vector
    ctx = pair_features.prepare_context(tokens, kv)
    n = len(q1s)
    frame = pair_features.handcrafted_features(ctx, qids[:n], qids[n:], n1, n2,
                                               features.raw_text_features(raw1, raw2), with_wmd=with_wmd, workers=1)
    return frame, ctx, tokens, kv, qids


def test_identical_questions_share_everything_and_are_at_distance_zero():
    frame, *_ = _pair_frame(["How do I learn Python?"], ["How do I learn Python?"])
    row = frame.iloc[0]
    for col in ("word_share", "word_jaccard", "tfidf_word_share", "word_share_nostop", "tfidf_word_share_nostop",
                "identical", "identical_raw", "same_first_word", "same_last_word", "len_words_ratio",
                "len_chars_ratio"):
        assert row[col] == pytest.approx(1.0), col
    for col in pair_features.FUZZ_SCORERS:
        assert row[f"fuzz_{col}"] == 100.0
    for col in ("w2v_cosine", "w2v_euclidean", "w2v_manhattan", "w2v_braycurtis", "w2v_canberra", "wmd",
                "len_words_diff", "len_chars_diff"):
        assert row[col] == pytest.approx(0.0, abs=1e-6), col
    assert row["common_words"] == 5 and row["q1_len_words"] == 5


def test_shared_word_ratios_with_and_without_stop_words():
    frame, *_ = _pair_frame(["How do I learn Python?", "Why is the sky blue"], ["How do I learn Java?", "Cats purr"])
    a, b = frame.iloc[0], frame.iloc[1]
    # {how, do, i, learn, python} vs {how, do, i, learn, java}: 4 common of 5 + 5, union 6
    assert a["common_words"] == 4
    assert a["word_share"] == pytest.approx(0.8)
    assert a["word_jaccard"] == pytest.approx(4 / 6)
    # without stop words: {learn, python} vs {learn, java}
    assert a["common_words_nostop"] == 1
    assert a["word_share_nostop"] == pytest.approx(0.5)
    assert a["word_jaccard_nostop"] == pytest.approx(1 / 3)
    assert 0 < a["tfidf_word_share"] < 1 and a["same_first_word"] == 1 and a["same_last_word"] == 0
    assert b["common_words"] == 0 and b["word_share"] == 0 and b["tfidf_word_share"] == 0
    assert b["w2v_cosine"] > 0 and b["wmd"] > 0
    assert a["q1_has_capital"] == 1 and a["q1_has_qmark"] == 1 and b["q1_has_qmark"] == 0


def test_empty_questions_give_finite_defined_values():
    frame, *_ = _pair_frame(["", "", "???", "What is 2+2?"], ["", "How do I learn Python?", "zzz", "[math]x^2[/math]"])
    assert np.isfinite(frame.to_numpy()).all()
    both_empty, one_empty = frame.iloc[0], frame.iloc[1]
    assert both_empty["identical"] == 0 and both_empty["identical_raw"] == 1  # two blanks are not one question
    assert both_empty["wmd"] == 0 and both_empty["w2v_cosine"] == 0 and both_empty["len_words_ratio"] == 1
    assert one_empty["wmd"] == 1 and one_empty["w2v_cosine"] == 1 and one_empty["word_share"] == 0
    # "zzz" has no vector: its side is empty for word2vec
    assert frame.iloc[2]["w2v_cosine"] == 0 and frame.iloc[2]["wmd"] == 0
    assert frame.iloc[3]["q1_has_digit"] == 1 and frame.iloc[3]["q2_has_math"] == 1


def test_wmd_matches_gensim():
    q1s = ["How do I learn Python fast?", "Why is the sky blue?", "Best laptop for coding"]
    q2s = ["What is the quickest way to learn Python?", "Why is the sea blue?", "Which laptop is best for coding?"]
    frame, ctx, tokens, kv, qids = _pair_frame(q1s, q2s)
    for i in range(3):
        doc1 = [w for w in tokens.of(qids[i]) if w not in text.STOP_WORDS]
        doc2 = [w for w in tokens.of(qids[3 + i]) if w not in text.STOP_WORDS]
        assert frame["wmd"].iloc[i] == pytest.approx(kv.wmdistance(doc1, doc2), abs=1e-4)


def test_vector_distances_known_values():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    b = np.array([[0.0, 1.0], [2.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    d = pair_features.vector_distances(a, b)
    np.testing.assert_allclose(d["w2v_cosine"], [1.0, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(d["w2v_euclidean"], [np.sqrt(2), np.sqrt(2), 5.0], atol=1e-6)
    np.testing.assert_allclose(d["w2v_manhattan"], [2.0, 2.0, 7.0], atol=1e-6)
    np.testing.assert_allclose(d["w2v_braycurtis"], [1.0, 2 / 6, 1.0], atol=1e-6)
    np.testing.assert_allclose(d["w2v_canberra"], [2.0, 2 / 3, 2.0], atol=1e-6)


# --------------------------------------------------------------------------------------------
# Pretrained vectors
# --------------------------------------------------------------------------------------------

def _pretrained_kv():
    # "Python" comes first (the file's most frequent variant wins), "python" later with other values
    return _keyed_vectors(["Python", "learn", "python", "java", "unrelated", "chess"], dim=5, seed=3)


@pytest.mark.parametrize("kind", ["word2vec-bin", "word2vec-bin-gz", "word2vec-text", "glove"])
def test_pretrained_loader_keeps_only_corpus_words(tmp_path, kind):
    kv = _pretrained_kv()
    path = tmp_path / {"word2vec-bin": "v.bin", "word2vec-bin-gz": "v.bin.gz", "word2vec-text": "v.txt",
                       "glove": "glove.txt"}[kind]
    if kind == "glove":
        path.write_text("".join(f"{w} {' '.join(repr(float(x)) for x in kv[w])}\n" for w in kv.index_to_key))
    else:
        plain = tmp_path / "plain"
        kv.save_word2vec_format(str(plain), binary=kind.startswith("word2vec-bin"))
        data = plain.read_bytes()
        path.write_bytes(gzip.compress(data) if kind.endswith("gz") else data)
    assert embeddings.detect_format(path) == kind.replace("-gz", "")
    words, vectors = embeddings.load_pretrained(path, ["python", "learn", "chess", "knitting"])
    assert sorted(words) == ["chess", "learn", "python"]
    got = dict(zip(words, vectors))
    np.testing.assert_allclose(got["python"], kv["Python"], atol=1e-5)  # first variant, matched lower-cased
    np.testing.assert_allclose(got["chess"], kv["chess"], atol=1e-5)
    assert vectors.dtype == np.float32


def test_pretrained_loader_errors(tmp_path):
    with pytest.raises(StageError, match="not found"):
        embeddings.load_pretrained(tmp_path / "nope.bin", ["a"])
    kv = _pretrained_kv()
    full = tmp_path / "full.bin"
    kv.save_word2vec_format(str(full), binary=True)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(full.read_bytes()[:-7])
    with pytest.raises(StageError, match="truncated"):
        embeddings.load_pretrained(truncated, ["chess"])
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"3 4\n" + bytes(range(7)))
    with pytest.raises(StageError, match="cannot read"):
        embeddings.load_pretrained(garbage, ["chess"], fmt="word2vec-bin")
    with pytest.raises(StageError, match="no word of the corpus"):
        embeddings.load_pretrained(full, ["knitting"])
    not_gzip = tmp_path / "fake.bin.gz"
    not_gzip.write_bytes(b"not gzip at all")
    with pytest.raises(StageError, match="cannot read"):
        embeddings.load_pretrained(not_gzip, ["chess"])


def test_embedding_block_rows():
    rng = np.random.default_rng(0)
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3) + 1
    block, found = embeddings.embedding_block(["b", "zz", "a"], ["a", "b"], vectors, rng, oov_scale=0.1)
    assert found == 2 and block.shape == (4, 3) and block.dtype == np.float32
    assert (block[0] == 0).all()
    np.testing.assert_array_equal(block[1], vectors[1])
    np.testing.assert_array_equal(block[3], vectors[0])
    assert 0 < np.abs(block[2]).max() < 1.0  # small random, not padding
    again, _ = embeddings.embedding_block(["b", "zz", "a"], ["a", "b"], vectors, np.random.default_rng(0), 0.1)
    np.testing.assert_array_equal(block, again)


def test_sequences_drop_rare_words_and_post_pad():
    tokens = text.tokenize(pa.array(["a b c a", "c", "", "a a a a a a"]))
    vocab, index = features.sequence_vocabulary(tokens, min_count=2)
    assert vocab == ["a", "c"]  # a: 7, c: 2, b: 1 (dropped)
    seq = features.question_sequences(tokens, index, max_len=3)
    assert seq.dtype == np.int32
    assert seq.tolist() == [[1, 2, 1], [2, 0, 0], [0, 0, 0], [1, 1, 1]]


# --------------------------------------------------------------------------------------------
# The stage end to end
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("quora_features")
    raw = qh.standard_raw(root / "raw")
    handler_records = []

    class Keep(logging.Handler):
        def emit(self, record):
            handler_records.append(record.getMessage())

    handler = Keep()
    logging.getLogger("pipelines").addHandler(handler)
    logging.getLogger("pipelines").setLevel(logging.INFO)
    try:
        timings = features.build_features(raw, root / "features", qh.params())
    finally:
        logging.getLogger("pipelines").removeHandler(handler)
    return {"raw": raw, "out": root / "features", "timings": timings, "log": handler_records}


def test_contract_files_and_types(built):
    out = built["out"]
    n_train = len(qh.pairs(1)) + len(qh.BAD_TRAIN_ROWS)
    n_test = 23
    ids_train, ids_test = np.load(out / "ids_train.npy"), np.load(out / "ids_test.npy")
    labels, folds = np.load(out / "labels.npy"), np.load(out / "folds.npy")
    assert ids_train.dtype == np.int64 and ids_test.dtype == np.int64
    assert labels.dtype == np.int8 and folds.dtype == np.int8
    assert len(ids_train) == len(labels) == len(folds) == n_train and len(ids_test) == n_test
    assert ids_train.tolist() == list(range(n_train))
    assert sorted(set(folds.tolist())) == [0, 1, 2]

    train = pd.read_parquet(out / "pair_features_train.parquet")
    test = pd.read_parquet(out / "pair_features_test.parquet")
    assert list(train.columns) == list(test.columns)
    assert len(train) == n_train and len(test) == n_test
    assert all(dt == np.float32 for dt in train.dtypes)
    assert np.isfinite(train.to_numpy()).all() and np.isfinite(test.to_numpy()).all()
    graph_cols = [c for c in train.columns if c.startswith("graph_")]
    assert {"graph_q1_freq", "graph_common_neighbours", "graph_q1_kcore", "graph_component_size"} <= set(graph_cols)
    assert {"word_share", "fuzz_token_set_ratio", "w2v_cosine", "wmd", "tfidf_word_cosine",
            "tfidf_char_cosine"} <= set(train.columns)

    for kind in ("word", "char"):
        shapes = set()
        for part, n in (("train", n_train), ("test", n_test)):
            for q in ("q1", "q2"):
                m = sp.load_npz(out / f"tfidf_{kind}_{q}_{part}.npz")
                assert sp.isspmatrix_csr(m) or isinstance(m, sp.csr_array)
                assert m.dtype == np.float32 and m.shape[0] == n
                shapes.add(m.shape[1])
        assert len(shapes) == 1  # one vectoriser for train and test, q1 and q2

    vocab = json.loads((out / "vocab.json").read_text())
    emb = np.load(out / "embedding_matrix.npy")
    assert sorted(vocab.values()) == list(range(1, len(vocab) + 1))
    assert emb.shape == (len(vocab) + 1, 16) and emb.dtype == np.float32 and (emb[0] == 0).all()
    for part, n in (("train", n_train), ("test", n_test)):
        for q in ("q1", "q2"):
            seq = np.load(out / f"seq_{q}_{part}.npy")
            assert seq.dtype == np.int32 and seq.shape == (n, 8)
            assert seq.max() <= len(vocab) and seq.min() >= 0
            # post-padding: once a zero appears, only zeros follow
            nonzero = seq > 0
            assert (np.cumsum(~nonzero, axis=1)[nonzero] == 0).all()
    text_train = pd.read_parquet(out / "text_train.parquet")
    inv = {i: w for w, i in vocab.items()}
    first = np.load(out / "seq_q1_train.npy")[0]
    assert [inv[i] for i in first if i] == text_train["q1"].iloc[0].split()[:8]

    from gensim.models import KeyedVectors

    kv = KeyedVectors.load(str(out / "word2vec.kv"))
    assert kv.vector_size == 16 and "python" in kv.key_to_index
    params = json.loads((out / "params.json").read_text())
    assert params["params"]["word2vec"]["vector_size"] == 16 and params["run"]["with_wmd"] is True
    timings = json.loads((out / "timings.json").read_text())
    assert {"text", "word2vec", "tfidf", "sequences", "pairs", "graph", "total"} <= set(timings)
    assert timings["total"]["peak_rss_mb"] > 0
    assert (out / "features.lock.json").exists()


def test_bad_input_is_counted_and_harmless(built):
    out, log = built["out"], built["log"]
    expected = {"empty_questions": 3, "whitespace_only_questions": 2, "non_ascii_questions": 6,
                "emoji_questions": 4, "long_questions": 1, "identical_pairs_train": 1, "identical_pairs_test": 1,
                "test_questions_unseen_in_train": 4}
    for case, count in expected.items():
        assert f"bad input: {case}: {count}" in log, (case, [m for m in log if case in m])
    text_train = pd.read_parquet(out / "text_train.parquet")
    rows = {tuple(r) for r in text_train[["q1", "q2"]].itertuples(index=False)}
    assert ("na", "null") in rows  # pandas' NaN spellings stay text
    identical = text_train[text_train.q1 == "how do i learn python"]
    assert (identical.qid1 == identical.qid2).any()
    feats = pd.read_parquet(out / "pair_features_train.parquet")
    long_row = len(qh.pairs(1)) + 5
    assert feats["q1_len_chars"].iloc[long_row] == len(qh.LONG_QUESTION)
    assert feats["identical"].iloc[len(qh.pairs(1)) + 6] == 1


def _mtimes(out):
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir()}


def test_rebuild_is_a_no_op_and_a_parameter_change_reruns_only_its_steps(tmp_path):
    raw = qh.standard_raw(tmp_path / "raw", bad=False)
    out = tmp_path / "features"
    first = features.build_features(raw, out, qh.params())
    assert all(first[s]["ran"] for s in ("text", "folds", "word2vec", "tfidf", "sequences", "pairs", "graph"))
    before = _mtimes(out)
    assert features.build_features(raw, out, qh.params()) == {"features": {"ran": False}}
    assert _mtimes(out) == before

    more_epochs = qh.params(word2vec={"epochs": 3})
    second = features.build_features(raw, out, more_epochs)
    ran = {s for s, r in second.items() if r.get("ran")}
    assert {"word2vec", "sequences", "pairs", "assemble"} <= ran
    assert not ran & {"text", "folds", "tfidf", "graph"}
    after = _mtimes(out)
    for name in ("tfidf_word_q1_train.npz", "tfidf_char_q2_test.npz", "graph_train.parquet", "text_train.parquet",
                 "folds.npy"):
        assert after[name] == before[name], name
    assert after["word2vec.kv"] != before["word2vec.kv"]

    third = features.build_features(raw, out, qh.params(word2vec={"epochs": 3}, n_folds=4))
    assert {s for s, r in third.items() if r.get("ran")} == {"folds", "assemble"}
    assert sorted(set(np.load(out / "folds.npy").tolist())) == [0, 1, 2, 3]

    # an input change re-runs everything
    qh.write_raw(raw, qh.pairs(1)[:-2] + [("Is this new?", "Is this new?", 1), ("A?", "B?", 0)], [("x?", "y?")])
    fourth = features.build_features(raw, out, qh.params(word2vec={"epochs": 3}, n_folds=4))
    assert fourth["text"]["ran"] and fourth["tfidf"]["ran"] and fourth["graph"]["ran"]
    assert len(np.load(out / "ids_test.npy")) == 1


def test_missing_raw_data_and_bad_options_are_stage_errors(tmp_path):
    with pytest.raises(StageError, match=r"no raw data in .*: run `make data COMP=quora SOURCE=mysrc` first"):
        features.build_features(tmp_path / "absent", tmp_path / "f", qh.params(), source="mysrc")
    raw = qh.standard_raw(tmp_path / "raw", bad=False)
    with pytest.raises(StageError, match="needs --pretrained-vectors"):
        features.build_features(raw, tmp_path / "f", qh.params(sequences={"vectors": "both"}))
    with pytest.raises(StageError, match="not found"):
        features.build_features(raw, tmp_path / "f", qh.params(
            sequences={"vectors": "pretrained", "pretrained_vectors": str(tmp_path / "missing.bin")}))
    with pytest.raises(StageError, match="char-ngrams"):
        features.build_features(raw, tmp_path / "f", qh.params(tfidf={"char_ngram_range": [2, 7]}))
    bad_csv = tmp_path / "bad" / "raw"
    qh.write_raw(bad_csv, qh.pairs(1), [("a", "b")])
    (bad_csv / "test.csv").write_text('"test_id","question1"\n"0","a"\n')
    with pytest.raises(StageError, match="lacks columns"):
        features.build_features(bad_csv, tmp_path / "bad" / "f", qh.params())


def test_pretrained_and_both_vectors_in_the_embedding_matrix(tmp_path):
    raw = qh.standard_raw(tmp_path / "raw", bad=False)
    glove = tmp_path / "glove.txt"
    rng = np.random.default_rng(1)
    glove.write_text("".join(f"{w} {' '.join(f'{x:.4f}' for x in rng.normal(size=6))}\n"
                             for w in ["Python", "learn", "java", "the", "elsewhere"]))
    out = tmp_path / "features"
    features.build_features(raw, out, qh.params(sequences={"vectors": "both", "pretrained_vectors": str(glove)}))
    emb = np.load(out / "embedding_matrix.npy")
    vocab = json.loads((out / "vocab.json").read_text())
    assert emb.shape == (len(vocab) + 1, 16 + 6)
    line = glove.read_text().splitlines()[0].split()
    np.testing.assert_allclose(emb[vocab["python"], 16:], np.array(line[1:], dtype=np.float32), atol=1e-6)
    # changing the vectors file re-runs the sequences step only (plus the final assembly)
    glove.write_text(glove.read_text().replace("elsewhere", "somewhere"))
    both = qh.params(sequences={"vectors": "both", "pretrained_vectors": str(glove)})
    again = features.build_features(raw, out, both)
    assert {s for s, r in again.items() if r.get("ran")} == {"sequences", "assemble"}


def test_cli_features_stage(project_dirs):
    from pipelines.__main__ import EXIT_STAGE_ERROR, main

    assert main(["features", "--comp", "quora", "--source", "sample"]) == EXIT_STAGE_ERROR  # no raw data yet: one-line error
    qh.standard_raw(config.raw_dir("quora", "sample"), bad=False)
    rc = main(["features", "--comp", "quora", "--source", "sample", "--n-folds", "3", "--w2v-dim", "8",
               "--w2v-epochs", "1", "--w2v-min-count", "1", "--max-len", "6", "--char-ngrams", "2", "3",
               "--wmd-max-pairs", "0"])
    assert rc == 0
    out = config.features_dir("quora", "sample")
    assert np.load(out / "embedding_matrix.npy").shape[1] == 8
    assert np.load(out / "seq_q1_test.npy").shape[1] == 6
    assert "wmd" not in pd.read_parquet(out / "pair_features_train.parquet").columns
    assert json.loads((out / "params.json").read_text())["params"]["tfidf"]["char_ngram_range"] == [2, 3]


@pytest.mark.realdata
def test_smoke_on_real_rows(shared_data, tmp_path):
    train_gz, test_gz = shared_data / "quora" / "train.csv.gz", shared_data / "quora" / "test.csv.gz"
    if not train_gz.exists() or not test_gz.exists():
        pytest.skip("real Quora rows are absent")
    raw = tmp_path / "raw"
    raw.mkdir()
    pd.read_csv(train_gz, nrows=400, keep_default_na=False).to_csv(raw / "train.csv", index=False)
    pd.read_csv(test_gz, nrows=150, keep_default_na=False).to_csv(raw / "test.csv", index=False)
    out = tmp_path / "features"
    features.build_features(raw, out, qh.params(n_folds=5))
    train = pd.read_parquet(out / "pair_features_train.parquet")
    test = pd.read_parquet(out / "pair_features_test.parquet")
    assert train.shape == (400, test.shape[1]) and len(test) == 150
    assert np.isfinite(train.to_numpy()).all() and np.isfinite(test.to_numpy()).all()
    assert np.load(out / "seq_q2_test.npy").shape == (150, 8)
    assert sp.load_npz(out / "tfidf_char_q1_train.npz").shape[0] == 400
    labels = np.load(out / "labels.npy")
    # the features carry signal on real pairs: duplicates share more words
    assert train["word_share_nostop"][labels == 1].mean() > train["word_share_nostop"][labels == 0].mean()


# --------------------------------------------------------------------------------------------
# Families added for model quality (unshared words, question words, numbers, n-grams, string
# metrics, LSA)
# --------------------------------------------------------------------------------------------

def test_new_families_on_identical_questions():
    frame, *_ = _pair_frame(["How do I learn Python 3?"], ["How do I learn Python 3?"])
    row = frame.iloc[0]
    for name in pair_features.STRING_METRICS:
        assert row[f"str_{name.lower()}"] == pytest.approx(1.0), name
    for col in ("bigram_jaccard", "bigram_share", "same_first2", "same_last2", "qw_first_match", "num_match"):
        assert row[col] == pytest.approx(1.0), col
    for col in ("unshared_sum", "unshared_idf_sum", "unshared_idf_rarest", "unshared_sum_nostop", "num_unshared",
                "qw_one_side"):
        assert row[col] == 0, col
    assert row["num_shared"] == 1 and row["qw_how"] == 2 and row["qw_why"] == 0
    assert row["shared_idf"] > 0


def test_new_families_known_values():
    frame, ctx, tokens, kv, qids = _pair_frame(["How do I learn Python 3?", "Is it raining"],
                                              ["Why do I learn Python 2?", "Is it raining today"])
    a, b = frame.iloc[0], frame.iloc[1]
    assert tokens.of(qids[0]) == ["how", "do", "i", "learn", "python", "3"]
    # {how, 3} vs {why, 2}: two words on each side the other lacks
    assert (a["unshared_min"], a["unshared_max"], a["unshared_sum"]) == (2, 2, 4)
    assert a["unshared_sum_nostop"] == 2  # how/why are stop words; 3 and 2 are not
    assert a["num_q1"] == 1 and a["num_q2"] == 1 and a["num_shared"] == 0 and a["num_unshared"] == 2
    assert a["num_match"] == 0
    how, why = pair_features.QUESTION_WORDS.index("how"), pair_features.QUESTION_WORDS.index("why")
    assert (a["qw_q1_first"], a["qw_q2_first"], a["qw_first_match"]) == (how, why, 0)
    assert a["qw_how"] == 1 and a["qw_why"] == 1 and a["qw_one_side"] == 2 and a["qw_both"] == 1  # "do"
    # bigrams: {how do, do i, i learn, learn python, python 3} vs {why do, ..., python 2}: 3 common, 7 in all
    assert a["bigram_jaccard"] == pytest.approx(3 / 7) and a["bigram_share"] == pytest.approx(0.6)
    assert a["same_first2"] == 0 and a["same_last2"] == 0
    # "is it raining" vs "is it raining today": one extra word, the same beginning, a common prefix
    assert b["unshared_min"] == 0 and b["unshared_max"] == 1
    assert b["unshared_idf_rarest"] == pytest.approx(ctx.idf[list(tokens.words).index("today")])
    assert b["same_first2"] == 1 and b["same_last2"] == 0 and b["qw_is"] == 2 and b["num_match"] == 1
    assert b["str_prefix"] == pytest.approx(len("is it raining") / len("is it raining today"))
    assert b["str_postfix"] == 0


def test_new_families_finite_on_bad_input():
    long_question = "why " + "word " * 2000  # 10,000 characters
    frame, *_ = _pair_frame(["", "😀😀 ?", long_question, "nan"], ["", "What is 😀?", long_question + "x", ""])
    assert np.isfinite(frame.to_numpy()).all()
    assert list(frame.columns) == list(pair_features._empty_frame(
        features.raw_text_features(pa.array([], pa.large_string()), pa.array([], pa.large_string())),
        with_wmd=True).columns)
    assert frame.iloc[0]["bigram_jaccard"] == 0 and frame.iloc[0]["unshared_sum"] == 0
    assert frame.iloc[2]["qw_why"] == 2


def test_binary_overlap_of_matrix_rows():
    m = sp.csr_matrix(np.array([[0.5, 0.5, 0, 0], [0.7, 0, 0.7, 0], [0, 0, 0, 0]], dtype=np.float32))
    out = pair_features.binary_overlap_features(m, np.array([0, 0, 2]), np.array([0, 1, 2]), "char3")
    np.testing.assert_allclose(out["char3_jaccard"], [1.0, 1 / 3, 0.0])
    np.testing.assert_allclose(out["char3_share"], [1.0, 0.5, 0.0])


def test_lsa_pair_features_identical_empty_and_fixed_columns():
    rng = np.random.default_rng(0)
    dense = rng.random((30, 12)).astype(np.float32) * (rng.random((30, 12)) < 0.4)
    dense[5] = 0  # an empty question
    m = sp.csr_matrix(dense)
    u, v = np.array([0, 1, 5, 5]), np.array([0, 2, 3, 5])
    out = pair_features.lsa_pair_features(m, u, v, "word", n_components=6, n_detail=4, max_fit_rows=20, seed=1)
    assert len(out) == 2 + 2 * 4
    assert out["lsa_word_cosine"][0] == pytest.approx(1.0, abs=1e-5)
    assert out["lsa_word_euclidean"][0] == pytest.approx(0.0, abs=1e-6)
    assert all(out[f"lsa_word_absdiff_{j}"][0] == pytest.approx(0.0, abs=1e-6) for j in range(4))
    assert -1.0 <= out["lsa_word_cosine"][1] < 1.0
    assert out["lsa_word_cosine"][2] == 0 and out["lsa_word_cosine"][3] == 0  # empty side: no similarity
    assert all(np.isfinite(col).all() and col.dtype == np.float32 for col in out.values())
    again = pair_features.lsa_pair_features(m, u, v, "word", n_components=6, n_detail=4, max_fit_rows=20, seed=1)
    assert all(np.array_equal(out[k], again[k]) for k in out)  # seeded: reproducible
    # a corpus too small for the requested components keeps the same columns (the missing ones 0)
    tiny = pair_features.lsa_pair_features(sp.csr_matrix(dense[:3, :3]), np.array([0]), np.array([1]), "char",
                                           n_components=100, n_detail=20, max_fit_rows=10, seed=1)
    assert len(tiny) == 2 + 2 * 20 and np.isfinite(np.concatenate(list(tiny.values()))).all()
