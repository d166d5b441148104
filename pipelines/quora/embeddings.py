"""Word vectors for the Quora features: word2vec trained on the questions, pretrained vectors
(word2vec binary/text or GloVe text) loaded only for the corpus vocabulary, and the embedding
matrix of the Siamese models.

Choices:
  * word2vec (gensim 4) trains on the distinct normalised questions of train+test, one per line of
    ``corpus.txt`` (gensim's ``corpus_file`` mode, which scales over cores). With more than one
    worker thread gensim is not bit-for-bit reproducible; the seed fixes the initialisation.
  * Pretrained files are streamed: only words of the corpus vocabulary are kept, so a 3.6 GB
    GoogleNews file costs one sequential read and memory for the matched words only. Words are
    matched case-insensitively; the first variant in the file (the most frequent one, as these files
    are ordered) wins, e.g. ``India`` gives the vector of ``india``.
  * Embedding rows of words without a vector are small seeded random normals (standard deviation
    ``oov_scale`` x that of the known vectors), so they differ from padding (row 0, zeros).
"""
from __future__ import annotations

import gzip
import io
import logging
from pathlib import Path
from typing import Iterable

import numpy as np

from pipelines.common.log import StageError

log = logging.getLogger(__name__)

FORMATS = ("auto", "word2vec-bin", "word2vec-text", "glove")


# --------------------------------------------------------------------------------------------
# word2vec training
# --------------------------------------------------------------------------------------------

def train_word2vec(corpus_file: Path, params: dict, seed: int, workers: int):
    """gensim KeyedVectors trained on a one-question-per-line corpus file."""
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec
    from tqdm.auto import tqdm

    class EpochBar(CallbackAny2Vec):
        def __init__(self, epochs: int):
            self.bar = tqdm(total=epochs, desc="word2vec", unit="epoch")

        def on_epoch_end(self, model):
            self.bar.update(1)

        def on_train_end(self, model):
            self.bar.close()

    corpus_file = Path(corpus_file)
    if corpus_file.stat().st_size == 0 or not corpus_file.read_bytes()[:1 << 20].strip():
        raise StageError(f"{corpus_file}: the questions have no words to train word2vec on; check the raw CSVs")
    try:
        model = Word2Vec(corpus_file=str(corpus_file), vector_size=int(params["vector_size"]),
                         window=int(params["window"]), min_count=int(params["min_count"]),
                         epochs=int(params["epochs"]), sg=int(params["sg"]), negative=int(params["negative"]),
                         sample=float(params["sample"]), seed=int(seed), workers=int(workers),
                         callbacks=[EpochBar(int(params["epochs"]))])
    except RuntimeError as exc:  # gensim: "you must first build vocabulary before training the model"
        raise StageError(f"word2vec could not train on {corpus_file} ({exc}): no word occurs "
                         f"min_count={params['min_count']} times; lower --w2v-min-count") from exc
    return model.wv


# --------------------------------------------------------------------------------------------
# Pretrained vectors, limited to the corpus vocabulary
# --------------------------------------------------------------------------------------------

def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _header(line: bytes) -> tuple[int, int] | None:
    parts = line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def detect_format(path: Path) -> str:
    """'word2vec-bin', 'word2vec-text' (both with a "<count> <dim>" header) or 'glove' (no header)."""
    with _open(path) as f:
        first = f.readline(1 << 20)
        header = _header(first)
        if header is None:
            return "glove"
        sample = f.read(header[1] * 4 + 256)
    # binary entries are "word<space><dim float32 bytes>": text entries are printable through and through
    space = sample.find(b" ")
    body = sample[space + 1: space + 1 + header[1] * 4] if space >= 0 else sample
    printable = all(32 <= b < 127 or b in (9, 10, 13) for b in body)
    return "word2vec-text" if printable else "word2vec-bin"


def load_pretrained(path, vocabulary: Iterable[str], fmt: str = "auto") -> tuple[list[str], np.ndarray]:
    """(words, float32 vectors) of the words of ``vocabulary`` found in a vectors file (streamed)."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"pretrained vectors file not found: {path}; pass an existing word2vec .bin or "
                         "GloVe .txt file to --pretrained-vectors, or use --vectors trained")
    if fmt not in FORMATS:
        raise StageError(f"unknown vectors format {fmt!r}; use one of {', '.join(FORMATS)}")
    wanted = set(vocabulary)
    try:
        fmt = detect_format(path) if fmt == "auto" else fmt
        reader = _read_binary if fmt == "word2vec-bin" else _read_text
        words, vectors = reader(path, wanted, header=fmt != "glove")
    except StageError:
        raise
    except (OSError, EOFError, ValueError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise StageError(f"cannot read pretrained vectors {path} as {fmt}: {exc}; check the file "
                         "(word2vec binary with a '<count> <dim>' header, or GloVe text) and "
                         "--pretrained-format") from exc
    if not words:
        raise StageError(f"no word of the corpus found in {path} ({fmt}): is it a word-vectors file "
                         "of the right language?")
    log.info("pretrained vectors %s (%s): %d of %d corpus words found, dim %d",
             path.name, fmt, len(words), len(wanted), vectors.shape[1])
    return words, vectors


def _read_binary(path: Path, wanted: set[str], header: bool = True) -> tuple[list[str], np.ndarray]:
    words, vectors = [], []
    with _open(path) as raw:
        f = io.BufferedReader(raw, 1 << 20) if not isinstance(raw, io.BufferedReader) else raw
        head = _header(f.readline(1 << 20))
        if head is None:
            raise ValueError("no '<count> <dim>' header line")
        count, dim = head
        if dim <= 0:
            raise ValueError(f"dimension {dim} in the header")
        n_bytes = dim * 4
        for i in range(count):
            word = bytearray()
            while True:  # the word runs to the first space; some writers put a newline before it
                ch = f.read(1)
                if not ch:
                    if i == count - 1 and not word:
                        break
                    raise ValueError(f"file ends inside entry {i + 1} of {count} (truncated?)")
                if ch == b" ":
                    break
                if ch != b"\n":
                    word += ch
            vec = f.read(n_bytes)
            if len(vec) < n_bytes:
                raise ValueError(f"file ends inside the vector of entry {i + 1} of {count} (truncated?)")
            text = word.decode("utf-8", errors="replace").lower()
            if text in wanted:
                wanted.discard(text)
                words.append(text)
                vectors.append(np.frombuffer(vec, dtype="<f4"))
    return words, _stack(vectors, dim)


def _read_text(path: Path, wanted: set[str], header: bool) -> tuple[list[str], np.ndarray]:
    words, vectors = [], []
    dim = None
    bad = 0
    with _open(path) as raw:
        f = io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
        first = f.readline()
        head = _header(first.encode())
        if head is not None:
            dim = head[1]
            lines = f
        else:
            lines = _chain([first], f)
        for n, line in enumerate(lines):
            space = line.find(" ")
            if space <= 0:
                if line.strip():
                    bad += 1
                continue
            word = line[:space].lower()
            if dim is None:
                dim = len(line.split()) - 1
                if dim <= 0:
                    raise ValueError(f"line {n + 1} has no vector")
            if word not in wanted:
                continue
            values = line[space + 1:].split()
            if len(values) != dim:
                bad += 1
                continue
            wanted.discard(word)
            words.append(word)
            vectors.append(np.asarray(values, dtype=np.float32))
    if bad:
        log.warning("pretrained vectors %s: %d malformed lines skipped", path.name, bad)
    return words, _stack(vectors, dim or 0)


def _chain(first, rest):
    yield from first
    yield from rest


def _stack(vectors: list[np.ndarray], dim: int) -> np.ndarray:
    if not vectors:
        return np.zeros((0, dim), dtype=np.float32)
    return np.vstack(vectors).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Embedding matrix
# --------------------------------------------------------------------------------------------

def embedding_block(vocab_words: list[str], words: list[str], vectors: np.ndarray, rng: np.random.Generator,
                    oov_scale: float) -> tuple[np.ndarray, int]:
    """(len(vocab_words) + 1, dim) float32 rows from one vector source; row 0 zeros; OOV rows random."""
    index = {w: i for i, w in enumerate(words)}
    dim = vectors.shape[1]
    std = float(vectors.std()) if vectors.size else 1.0
    block = (rng.standard_normal((len(vocab_words) + 1, dim)) * (oov_scale * std)).astype(np.float32)
    block[0] = 0.0
    rows = np.array([index.get(w, -1) for w in vocab_words], dtype=np.int64)
    found = rows >= 0
    block[1:][found] = vectors[rows[found]]
    return block, int(found.sum())
