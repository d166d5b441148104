"""Fixture helpers for the Quora features tests: tiny raw CSVs in Kaggle's schema, fast parameters."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

TOPICS = ["python", "java", "cooking", "football", "guitar", "physics", "marketing", "yoga", "chess", "history",
          "painting", "running"]
FORMS = [
    ("How do I learn {t}?", "What is the best way to learn {t}?"),
    ("Is {t} hard to learn?", "How difficult is it to learn {t}?"),
    ("Why do people like {t}?", "What makes {t} so popular?"),
]

# Parameters that keep a build to a second or two: tiny word2vec, few folds.
FAST_PARAMS = {
    "n_folds": 3,
    "word2vec": {"vector_size": 16, "window": 3, "min_count": 1, "epochs": 2},
    "tfidf": {"min_df": 1},
    "sequences": {"max_len": 8, "min_count": 1},
}

LONG_QUESTION = "Why " + "very " * 2000 + "long?"  # 10,009 characters
BAD_TRAIN_ROWS = [  # (question1, question2, is_duplicate)
    (None, "What is a missing question?", 0),              # NaN
    ("", "Is an empty question a question?", 0),           # empty
    ("   \t ", "What about whitespace only?", 0),          # whitespace-only
    ("Qu'est-ce que c'est, café?", "What is a café?", 0),  # non-ASCII
    ("Is 😀 a good emoji?", "Which emoji is best 🎉?", 0),  # emoji
    (LONG_QUESTION, "Why is this question so long?", 0),   # 10,000 characters
    ("How do I learn python?", "How do I learn python?", 1),  # identical
    ("NA", "null", 0),                                     # pandas' default NaN strings are text here
]


def pairs(n_per_form: int = 1) -> list[tuple[str, str, int]]:
    """Duplicates (two wordings of one question) and non-duplicates (different topics)."""
    rows = []
    for k in range(n_per_form):
        for i, t in enumerate(TOPICS):
            for j, (a, b) in enumerate(FORMS):
                rows.append((a.format(t=t), b.format(t=t), 1))
                other = TOPICS[(i + 1 + j + k) % len(TOPICS)]
                rows.append((a.format(t=t), a.format(t=other), 0))
    return rows


def write_raw(raw_dir: Path, train_rows, test_rows) -> Path:
    """train.csv/test.csv exactly as Kaggle ships them (all fields quoted; None -> empty field)."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    train = pd.DataFrame(train_rows, columns=["question1", "question2", "is_duplicate"])
    train.insert(0, "id", np.arange(len(train)))
    train.insert(1, "qid1", 2 * np.arange(len(train)) + 1)
    train.insert(2, "qid2", 2 * np.arange(len(train)) + 2)
    test = pd.DataFrame(test_rows, columns=["question1", "question2"])
    test.insert(0, "test_id", np.arange(len(test)))
    train.to_csv(raw_dir / "train.csv", index=False, quoting=csv.QUOTE_ALL)
    test.to_csv(raw_dir / "test.csv", index=False, quoting=csv.QUOTE_ALL)
    return raw_dir


def standard_raw(raw_dir: Path, bad: bool = True) -> Path:
    train = pairs(1) + (BAD_TRAIN_ROWS if bad else [])
    test = [(a, b) for a, b, _ in pairs(1)[:20]]
    test += [("How do I learn knitting?", "What is the best way to learn knitting?"),  # unseen in train
             ("", "   "), ("Is 😀 a good emoji?", "Is 😀 a good emoji?")]
    return write_raw(raw_dir, train, test)


def params(**overrides) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in FAST_PARAMS.items()}
    for key, value in overrides.items():
        if isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        else:
            out[key] = value
    return out
