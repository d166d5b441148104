"""Quora Question Pairs raw data: the synthetic sample generator and the validation of raw/.

Raw files, exactly as Kaggle ships them:
    train.csv              id,qid1,qid2,question1,question2,is_duplicate
    test.csv               test_id,question1,question2
    sample_submission.csv  test_id,is_duplicate   (may be absent for a hand import: warned)

The sample is built from paraphrase templates (no downloaded text): a *concept* is an intent with its
slot values ("learn {Python} fast"); its *variants* are surface forms of it (templates, synonyms, small
typos). Two variants of one concept are duplicates; negatives are mostly hard (same intent with another
slot value, or same slot value with another intent) so word overlap alone does not solve it.
"""
from __future__ import annotations

import csv
import dataclasses
import itertools
import logging
import random
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.common.io import atomic_path
from pipelines.common.log import StageError
from pipelines.common.options import option

log = logging.getLogger(__name__)

GENERATOR_VERSION = "quora-sample-v1"


@dataclasses.dataclass
class SampleOptions:
    """The built-in sample's size (``make data COMP=quora SOURCE=sample ARGS='--n-train 2000'``)."""

    n_train: int = option(4000, "sample: training pairs")
    n_test: int = option(1500, "sample: test pairs")


KAGGLE_SIZE = {"n_train": 404_290, "n_test": 2_345_796}
DATA_URL = "https://www.kaggle.com/competitions/quora-question-pairs/data"
TRAIN_COLUMNS = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
TEST_COLUMNS = ["test_id", "question1", "question2"]
SUBMISSION_COLUMNS = ["test_id", "is_duplicate"]
DATA_FILES = ("train.csv", "test.csv", "sample_submission.csv")
REQUIRED_FILES = ("train.csv", "test.csv")
MARKER = "train.csv"  # what identifies the data's top folder inside a wrapper folder or archive

POSITIVE_RATE = 0.365   # before label noise; Kaggle's train has 0.369
LABEL_NOISE = 0.05      # Quora's labels are noisy too
NEGATIVE_MIX = (0.40, 0.25, 0.35)  # same intent/other slot, same slot/other intent, unrelated
VARIANT_SKEW = 0.25      # geometric p for which variant of a concept a pair uses: popular wordings recur
SAME_FORM = 0.6         # share of same-intent negatives worded alike
CONCEPT_ZIPF = 0.5       # popularity of concepts ~ 1/rank^this: some questions are asked again and again

# ---------------------------------------------------------------- vocabulary
LANGS = ["Python", "Java", "JavaScript", "C++", "C#", "Ruby", "Go", "Rust", "Swift", "Kotlin", "PHP", "R", "Scala",
         "Haskell", "SQL", "MATLAB", "Perl", "TypeScript"]
SUBJECTS = ["machine learning", "data science", "web development", "calculus", "linear algebra", "organic chemistry",
            "quantum physics", "economics", "accounting", "digital marketing", "graphic design", "photography",
            "statistics", "psychology", "philosophy", "astronomy", "stock trading", "blockchain", "cloud computing",
            "cyber security", "artificial intelligence", "deep learning", "ethical hacking", "Android development"]
SKILLS = ["guitar", "piano", "violin", "drums", "singing", "swimming", "chess", "cooking", "drawing", "painting",
          "dancing", "yoga", "meditation", "public speaking", "touch typing", "skateboarding", "calligraphy",
          "juggling", "knitting"]
TONGUES = ["French", "Spanish", "German", "Japanese", "Mandarin", "English", "Hindi", "Arabic", "Russian", "Italian",
           "Korean", "Portuguese", "sign language"]
COUNTRIES = ["India", "the USA", "Canada", "Germany", "Japan", "Australia", "the UK", "France", "Italy",
             "Singapore", "Switzerland", "Brazil", "Thailand", "New Zealand"]
CITIES = ["Dubai", "Mumbai", "Delhi", "Bangalore", "New York", "London", "Paris", "Tokyo", "Sydney", "Berlin",
          "Toronto", "San Francisco", "Goa", "Kerala", "Hyderabad", "Chennai", "Pune"]
COMPANIES = ["Google", "Amazon", "Microsoft", "Facebook", "Apple", "Infosys", "TCS", "Wipro", "Uber", "Netflix",
             "Tesla", "IBM", "Accenture", "Deloitte", "Goldman Sachs", "McKinsey", "Flipkart", "Quora", "Airbnb",
             "Oracle"]
JOBS = ["software engineer", "data scientist", "doctor", "lawyer", "pilot", "chartered accountant", "teacher", "nurse",
        "investment banker", "product manager", "UX designer", "journalist", "architect", "IAS officer",
        "psychologist", "chef", "game developer", "civil engineer", "mechanical engineer", "dentist"]
SALARY_PLACES = ["India", "the USA", "the UK", "Canada", "Germany", "Australia", "Singapore"]
PRODUCTS = ["iPhone 7", "Samsung Galaxy S7", "OnePlus 3", "MacBook Pro", "Xbox One", "PS4", "Kindle Paperwhite",
            "Apple Watch", "Google Pixel", "iPad Pro", "Moto G4", "Redmi Note 4", "Dell XPS 13", "Surface Pro 4"]
IMPROVE = ["English", "memory", "concentration", "handwriting", "communication skills", "vocabulary", "confidence",
           "writing skills", "productivity", "sleep quality", "posture", "typing speed", "reading speed",
           "time management"]
EXAMS = ["GRE", "GMAT", "CAT", "IELTS", "TOEFL", "JEE", "NEET", "UPSC", "SAT", "GATE", "CFA", "CPA"]
TOPICS = ["Donald Trump", "Hillary Clinton", "demonetization in India", "Brexit", "Narendra Modi", "global warming",
          "Obamacare", "the 2016 US election", "Elon Musk", "Bitcoin", "the GST bill", "Arvind Kejriwal"]
SOCIAL = ["Quora", "Instagram", "Twitter", "YouTube", "Snapchat", "LinkedIn"]

LEARNABLE = LANGS + SUBJECTS + SKILLS + TONGUES
STUDY = LANGS + SUBJECTS + TONGUES


def _pairs(values: list[str]) -> list[tuple[str, str]]:
    return list(itertools.combinations(values, 2))


# Intent -> (slot values, paraphrase templates). "(a|b|)" picks one alternative ("" allowed).
# Every template of one intent asks the same thing, so two renderings of one concept are duplicates.
INTENTS: dict[str, tuple[list, list[str]]] = {
    "learn_fast": (LEARNABLE, [
        "How (do|can) I learn {a} (quickly|fast)?",
        "What is the (fastest|quickest) way to learn {a}?",
        "What's the (fastest|quickest) way to (learn|pick up) {a}?",
        "How (can|do) (I|one) (master|learn) {a} in a short (time|period of time)?",
        "How to learn {a} (fast|quickly)?",
        "Which is the (fastest|quickest) way of learning {a}?",
    ]),
    "learn_start": (LEARNABLE, [
        "How should I (start|begin) learning {a}?",
        "What is the best way to (start|begin) learning {a} (as a beginner|from scratch|)?",
        "Where (do|should) I start if I want to learn {a}?",
        "I am a (|complete )beginner in {a}. Where should I start?",
        "How do (I|you) get started with {a}?",
    ]),
    "best_books": (STUDY, [
        "What are the best books (to learn|for learning) {a}?",
        "Which books should I read to learn {a}?",
        "(Can|Could) you (recommend|suggest) (some |)good books (on|about) {a}?",
        "What are some (must-read|highly recommended) books (on|about) {a}?",
    ]),
    "online_courses": (LANGS + SUBJECTS, [
        "What are the best online courses (for|to learn) {a}?",
        "Which (online course|MOOC) is (the |)best for learning {a}?",
        "What are the best websites to learn {a} online?",
        "Where can I (learn|study) {a} online?",
    ]),
    "is_worth": (STUDY, [
        "Is it worth learning {a} in 2017?",
        "Is {a} worth learning (in 2017|this year|nowadays)?",
        "Should I (learn|invest time in learning) {a} (in 2017|this year|now)?",
        "Does learning {a} still make sense (in 2017|today)?",
    ]),
    "which_better": (_pairs(LANGS) + _pairs(PRODUCTS) + _pairs(COUNTRIES) + _pairs(COMPANIES), [
        "Which is better, {a} or {b}?",
        "Which one is better: {a} or {b}?",
        "{a} (vs|or) {b}: which (one |)is better?",
        "Is {a} better than {b}?",
        "Should I (choose|go for|pick) {a} or {b}?",
    ]),
    "difference": (_pairs(LANGS) + _pairs(SUBJECTS), [
        "What is the difference between {a} and {b}?",
        "What are the (main|key) differences between {a} and {b}?",
        "How is {a} different from {b}?",
        "How does {a} differ from {b}?",
    ]),
    "visit": (COUNTRIES + CITIES, [
        "What are the best places to visit in {a}?",
        "Which (places|spots) should I (visit|see) in {a}?",
        "What are the (top|must-see) tourist (attractions|places) in {a}?",
        "What should I see on a trip to {a}?",
    ]),
    "live": (COUNTRIES + CITIES, [
        "What is it like to live in {a}?",
        "How is (life|living) in {a}?",
        "What is (life|the quality of life) like in {a}?",
        "How good is life in {a}?",
    ]),
    "immigrate": (COUNTRIES, [
        "How can I (immigrate|move) to {a}?",
        "What is the (process|easiest way) to (immigrate|emigrate) to {a}?",
        "How do I (immigrate|relocate) to {a}?",
    ]),
    "job_at": (COMPANIES, [
        "How (do|can) I get a job at {a}?",
        "How can I get hired (by|at) {a}?",
        "What does it take to (work at|get a job at|get into) {a}?",
        "What is the best way to land a job at {a}?",
    ]),
    "work_culture": (COMPANIES, [
        "What is it like to work at {a}?",
        "How is the work culture at {a}?",
        "What is the (work|company) culture like at {a}?",
        "How is working at {a}?",
    ]),
    "become": (JOBS, [
        "How do I become a {a}?",
        "What (steps|qualifications) do I need to become a {a}?",
        "What does it take to become a {a}?",
        "How can (I|one) become a {a}?",
        "What is the path to becoming a {a}?",
    ]),
    "salary": ([(j, p) for j in JOBS for p in SALARY_PLACES], [
        "What is the average salary of a {a} in {b}?",
        "How much does a {a} (earn|make) in {b}?",
        "How much (money |)do {a}s (earn|make) in {b}?",
        "What (salary|pay) can a {a} expect in {b}?",
    ]),
    "improve": (IMPROVE, [
        "How can I improve my {a}?",
        "What are (some|the best) ways to improve (my|one's) {a}?",
        "How do I improve my {a} (quickly|fast|)?",
        "What (should|can) I do to improve my {a}?",
        "Any tips (for|on) improving my {a}?",
    ]),
    "prepare_exam": (EXAMS, [
        "How should I prepare for the {a}?",
        "What is the best (strategy|way) to prepare for the {a}?",
        "How do I (crack|ace) the {a}?",
        "How can I (score well|get a good score) (in|on) the {a}?",
    ]),
    "exam_time": (EXAMS, [
        "How much time do I need to prepare for the {a}?",
        "How long does it take to prepare for the {a}?",
        "How long should I study for the {a}?",
    ]),
    "opinion": (TOPICS, [
        "What do you think (of|about) {a}?",
        "What is your opinion (of|on|about) {a}?",
        "How do you feel about {a}?",
        "What are your (views|thoughts) on {a}?",
    ]),
    "why_popular": (LANGS + COMPANIES + PRODUCTS + SOCIAL, [
        "Why is {a} so popular?",
        "What makes {a} so popular?",
        "Why do (so many|most) people (like|love) {a}?",
        "What is the reason for {a}'s popularity?",
    ]),
    "buy_worth": (PRODUCTS, [
        "Should I buy the {a}?",
        "Is the {a} worth buying?",
        "Is it worth buying the {a} (now|in 2017)?",
        "Is the {a} worth the money?",
    ]),
    "review": (PRODUCTS, [
        "How good is the {a}?",
        "What are the pros and cons of the {a}?",
        "What do (users|people) think (of|about) the {a}?",
        "Is the {a} (any |)good?",
    ]),
    "followers": (SOCIAL, [
        "How can I get more followers on {a}?",
        "How do I increase my followers on {a}?",
        "What is the best way to get more {a} followers?",
        "How (can|do) I grow my {a} following?",
    ]),
    "delete_account": (SOCIAL, [
        "How do I delete my {a} account?",
        "How can I (permanently |)delete my {a} account?",
        "What is the way to remove my {a} account (permanently|for good)?",
        "How to delete a {a} account?",
    ]),
    "lose_weight": ([None], [
        "How can I lose weight (fast|quickly)?",
        "What is the (fastest|quickest|best) way to lose weight?",
        "How do I lose weight (fast|quickly)?",
        "What are (some|the best) tips for (losing weight|weight loss)?",
        "How (can|do) I shed (some|a few) (pounds|kilos) (fast|quickly)?",
    ]),
    "gain_weight": ([None], [
        "How can I gain weight (fast|quickly)?",
        "What is the (fastest|best) way to gain weight?",
        "How do I put on weight (fast|quickly)?",
        "What are (some|the best) tips for gaining weight?",
    ]),
    "make_money": ([None], [
        "How can I make money online?",
        "What are (some|the best) ways to (make|earn) money online?",
        "How do I earn money (online|on the internet)?",
        "What is the (easiest|best) way to make money online?",
    ]),
    "meaning_of_life": ([None], [
        "What is the meaning of life?",
        "What is the purpose of (life|our life)?",
        "What is the point of (life|living)?",
        "Why are we (here|alive)? What is the purpose of it all?",
    ]),
    "be_happy": ([None], [
        "How can I be happy?",
        "What is the secret (of|to) happiness?",
        "How (do|can) I (stay|be) happy (in life|all the time)?",
        "How can I become a happier person?",
    ]),
}
_ALT = re.compile(r"\(([^()]*)\)")


def _render(template: str, slots, form_seed: int) -> str:
    """A template with its alternatives and slot order fixed by ``form_seed``: one *form* rendered for two
    slot values reads alike ("How do I learn Python fast?" / "How do I learn Java fast?")."""
    rnd = random.Random(form_seed)
    text = _ALT.sub(lambda m: rnd.choice(m.group(1).split("|")), template)
    if slots is not None:
        a, b = (slots, None) if isinstance(slots, str) else (slots if rnd.random() < 0.5 else slots[::-1])
        text = text.replace("{a}", a).replace("{b}", b or "")
    return re.sub(r"\s+", " ", text).replace(" ?", "?").replace(" .", ".").strip()


def _noise(text: str, rnd: random.Random) -> str:
    """Surface noise Quora's questions have: lower case, a missing '?', a typo, a trailing plea."""
    u = rnd.random()
    if u < 0.05:
        text = text.lower()
    elif u < 0.11:
        text = text.rstrip("?")
    elif u < 0.16:
        words = text.split(" ")
        k = rnd.randrange(len(words))
        w = words[k]
        if len(w) > 3:
            i = rnd.randrange(len(w) - 2)
            words[k] = w[:i] + w[i + 1] + w[i] + w[i + 2:]
        text = " ".join(words)
    elif u < 0.19:
        text = text + rnd.choice([" Please help.", " Any suggestions?", " Need advice.", " Thanks in advance."])
    return text


def build_pool(variants_per_concept: int, seed: int) -> dict:
    """Concepts and their distinct surface forms, as flat arrays (variants of a concept are contiguous)."""
    rnd = random.Random(seed)
    texts: list[str] = []
    var_concept: list[int] = []
    concept_intent: list[int] = []
    concept_key: list[str] = []
    starts: list[int] = []
    counts: list[int] = []
    seen: set[str] = set()
    for intent_id, (name, (slot_values, templates)) in enumerate(INTENTS.items()):
        # The intent's wordings, in the same order for each of its concepts: variant k of two concepts of one
        # intent often reads alike, which makes the hard negatives.
        forms = [(rnd.choice(templates), rnd.getrandbits(32)) for _ in range(3 * variants_per_concept)]
        for slots in slot_values:
            c = len(starts)
            want = 2 + min(variants_per_concept - 2, int(rnd.expovariate(1.0 / max(1, variants_per_concept - 2))))
            start = len(texts)
            for template, form_seed in forms:
                if len(texts) - start >= want:
                    break
                t = _noise(_render(template, slots, form_seed), rnd)
                if t not in seen:  # a text belongs to one concept only
                    seen.add(t)
                    texts.append(t)
                    var_concept.append(c)
            if len(texts) - start < 1:
                continue
            starts.append(start)
            counts.append(len(texts) - start)
            concept_intent.append(intent_id)
            # Slot value a concept shares with other intents' concepts ("Python" in learn_fast and best_books).
            concept_key.append(slots if isinstance(slots, str) else ("" if slots is None else slots[0]))
    return {
        "texts": np.array(texts, dtype=object),
        "var_concept": np.array(var_concept, dtype=np.int64),
        "start": np.array(starts, dtype=np.int64),
        "count": np.array(counts, dtype=np.int64),
        "intent": np.array(concept_intent, dtype=np.int64),
        "key": np.array(concept_key, dtype=object),
    }


def _groups(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Members sorted by group; for each element: where its group starts in that order, the group's size,
    and its own position in that order."""
    _, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    group_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pos_in_order = np.empty_like(order)
    pos_in_order[order] = np.arange(len(order))
    return order, group_start[inverse], sizes[inverse], pos_in_order


def _other_in_group(rng, concepts, order, gstart, gsize, pos) -> np.ndarray:
    """A different member of each concept's group (itself when the group has one member)."""
    size = gsize[concepts]
    offset = pos[concepts] - gstart[concepts]
    shift = 1 + rng.integers(0, np.maximum(size - 1, 1))
    other = order[gstart[concepts] + (offset + np.where(size > 1, shift, 0)) % size]
    return other


def sample_pairs(pool: dict, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` pairs of variant indices and their labels (before label noise)."""
    n_concepts = len(pool["start"])
    # Zipf-like popularity: a few concepts are asked about often (their questions recur across pairs).
    weights = 1.0 / np.arange(1, n_concepts + 1) ** CONCEPT_ZIPF
    weights = weights[rng.permutation(n_concepts)]
    weights /= weights.sum()
    c1 = rng.choice(n_concepts, size=n, p=weights)
    kind = rng.choice(4, size=n, p=[POSITIVE_RATE, *(np.array(NEGATIVE_MIX) * (1 - POSITIVE_RATE))])

    same_intent = _groups(pool["intent"])
    same_key = _groups(pool["key"])
    c2 = c1.copy()
    m = kind == 1
    c2[m] = _other_in_group(rng, c1[m], *same_intent)
    m = kind == 2
    c2[m] = _other_in_group(rng, c1[m], *same_key)
    m = kind == 3
    c2[m] = rng.integers(0, n_concepts, size=int(m.sum()))
    # Where no hard negative exists (a one-member group) or the random pick hit c1, take the next concept.
    clash = (kind > 0) & (c2 == c1)
    c2[clash] = (c1[clash] + 1 + rng.integers(0, n_concepts - 1, size=int(clash.sum()))) % n_concepts

    # Variant within concept: skewed to the first ones so some texts recur (qid reuse, as in the real data).
    def pick(c):
        k = np.minimum(rng.geometric(VARIANT_SKEW, size=len(c)) - 1, pool["count"][c] - 1)
        return k

    k1 = pick(c1)
    k2 = pick(c2)
    # Same intent, other slot value: mostly in the same wording ("learn Python fast" / "learn Java fast").
    same_form = (kind == 1) & (rng.random(n) < SAME_FORM)
    k2[same_form] = np.minimum(k1[same_form], pool["count"][c2[same_form]] - 1)
    pos = kind == 0
    cnt = pool["count"][c1]
    k2[pos] = (k1[pos] + 1 + rng.integers(0, np.maximum(cnt[pos] - 1, 1))) % cnt[pos]
    v1 = pool["start"][c1] + k1
    v2 = pool["start"][c2] + k2
    # A concept with a single variant cannot make a positive pair: make it a random negative instead.
    single = pos & (v1 == v2)
    if single.any():
        other = (c1[single] + 1 + rng.integers(0, n_concepts - 1, size=int(single.sum()))) % n_concepts
        v2[single] = pool["start"][other]
        c2[single] = other
    label = (c1 == c2).astype(np.int64)
    swap = rng.random(n) < 0.5  # which side the first question lands on
    v1, v2 = np.where(swap, v2, v1), np.where(swap, v1, v2)
    return v1, v2, label


def _first_appearance_ids(q1: np.ndarray, q2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """qid numbering as in Kaggle's train.csv: 1, 2, ... in order of first appearance (q1 then q2 per row)."""
    slots = np.stack([q1, q2], axis=1).ravel()
    _, first, inverse = np.unique(slots, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(1, len(first) + 1)
    qids = rank[inverse].reshape(-1, 2)
    return qids[:, 0], qids[:, 1]


def _write_chunks(path: Path, frames, quote_all: bool) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            for i, df in enumerate(frames):
                df.to_csv(f, index=False, header=(i == 0), lineterminator="\n",
                          quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)


def generate_sample(raw_dir: Path, n_train: int = SampleOptions.n_train, n_test: int = SampleOptions.n_test,
                    seed: int = 42) -> None:
    """Write train.csv, test.csv and sample_submission.csv in Kaggle's schema (same seed -> same bytes)."""
    if n_train < 10 or n_test < 1:
        raise StageError(f"sample too small (n_train={n_train}, n_test={n_test}): use --n-train >= 10, --n-test >= 1")
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    n_concepts = sum(len(v[0]) for v in INTENTS.values())
    # Enough wordings that about a third of the train questions recur in several pairs at the default size
    # (Kaggle's train.csv: a fifth); the vocabulary caps it at the full size, where they recur more.
    per_concept = int(np.clip(2 * (n_train + n_test) / (0.5 * n_concepts), 4, 120))
    pool = build_pool(per_concept, seed)
    rng = np.random.default_rng(seed)
    texts = np.concatenate([pool["texts"], np.array([None], dtype=object)])
    missing = len(texts) - 1  # index of the "no question" text

    v1, v2, label = sample_pairs(pool, n_train, rng)
    noisy = rng.random(n_train) < LABEL_NOISE
    label = np.where(noisy, 1 - label, label)
    # Kaggle's train.csv has a few missing questions; keep a handful (each with its own qid, as there).
    n_missing = 3 + n_train // 150_000
    rows = rng.choice(n_train, size=min(n_missing, n_train), replace=False)
    sentinel1 = np.arange(len(texts), len(texts) + len(rows))
    v1 = v1.copy()
    v2 = v2.copy()
    v1[rows[:1]] = sentinel1[:1]
    v2[rows[1:]] = sentinel1[1:]
    qid1, qid2 = _first_appearance_ids(v1, v2)
    v1 = np.where(v1 >= len(texts), missing, v1)
    v2 = np.where(v2 >= len(texts), missing, v2)
    log.info("quora sample: %d concepts, %d distinct questions, train positive rate %.3f",
             len(pool["start"]), len(pool["texts"]), label.mean())

    chunk = 250_000

    def train_frames():
        for s in range(0, n_train, chunk):
            e = min(s + chunk, n_train)
            yield pd.DataFrame({"id": np.arange(s, e), "qid1": qid1[s:e], "qid2": qid2[s:e],
                                "question1": texts[v1[s:e]], "question2": texts[v2[s:e]],
                                "is_duplicate": label[s:e]})

    _write_chunks(raw_dir / "train.csv", train_frames(), quote_all=True)

    t1, t2, _ = sample_pairs(pool, n_test, rng)
    if n_test >= 10:
        t1[rng.integers(0, n_test)] = missing
        t2[rng.integers(0, n_test)] = missing

    def test_frames():
        for s in range(0, n_test, chunk):
            e = min(s + chunk, n_test)
            yield pd.DataFrame({"test_id": np.arange(s, e), "question1": texts[t1[s:e]], "question2": texts[t2[s:e]]})

    _write_chunks(raw_dir / "test.csv", test_frames(), quote_all=True)

    def submission_frames():
        for s in range(0, n_test, 1_000_000):
            e = min(s + 1_000_000, n_test)
            yield pd.DataFrame({"test_id": np.arange(s, e), "is_duplicate": np.ones(e - s, dtype=np.int64)})

    _write_chunks(raw_dir / "sample_submission.csv", submission_frames(), quote_all=False)


# ---------------------------------------------------------------- import helpers used by acquire.py
def is_data_name(rel: str) -> bool:
    """Whether a file (by its path inside the user's folder or archive) is Quora competition data."""
    name = Path(rel).name.lower()
    for ext in (".zip", ".gz", ".7z"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name in DATA_FILES or name == "quora-question-pairs"


def keep(rel: str) -> bool:
    return rel in DATA_FILES


def looks_like(names: set[str]) -> bool:
    """Whether names seen in a source (files, folders, archive entries) look like the Quora data."""
    lowered = {Path(n).name.lower() for n in names}
    return bool(lowered & {"train.csv", "train.csv.zip", "train.csv.gz", "quora-question-pairs.zip"})


def archive_target(archive: Path, members: list[str]) -> str | None:
    return None


def normalize(root: Path) -> None:
    """Nothing to rearrange: Kaggle's Quora files are flat."""


# ---------------------------------------------------------------- validation
def _read_csv(path: Path, fix: str) -> pd.DataFrame:
    try:
        # Only truly empty fields are missing: a question reading "NA" or "null" is text, not NaN.
        return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"question1": "string",
                                                                               "question2": "string"})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise StageError(f"{path.name} is not a readable CSV ({type(exc).__name__}: {str(exc)[:120]}); {fix}") from exc


def _require_columns(df: pd.DataFrame, expected: list[str], path: Path, fix: str) -> None:
    missing = [c for c in expected if c not in df.columns]
    if missing:
        raise StageError(f"{path.name}: missing column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns))}); "
                         f"{fix}")


def _require_int(df: pd.DataFrame, column: str, path: Path, fix: str) -> None:
    if not pd.api.types.is_integer_dtype(df[column]):
        values = df[column]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.isna().any():  # text or empty fields
            rows = np.flatnonzero(numeric.isna().to_numpy())[:3]
            bad = [values.iloc[r] if not pd.isna(values.iloc[r]) else "(empty)" for r in rows]
            where = ", ".join(f"{b!r} on line {r + 2}" for b, r in zip(bad, rows))
            raise StageError(f"{path.name}: column {column} must hold integers, found {where}; {fix}")
        # numbers written with a decimal point (1.0/0.0, as a spreadsheet or pandas may save them)
        row = int(np.flatnonzero((numeric != numeric.round()).to_numpy())[0]) if (numeric != numeric.round()).any() \
            else 0
        raise StageError(f"{path.name}: column {column} must hold integers, found {values.iloc[row]!r} on line "
                         f"{row + 2} (numbers with a decimal point): write it as whole numbers (e.g. 1 and 0, "
                         f"not 1.0 and 0.0), or get the original file from {DATA_URL}")


def _require_unique(df: pd.DataFrame, column: str, path: Path, fix: str) -> None:
    dup = df[column][df[column].duplicated()]
    if len(dup):
        raise StageError(f"{path.name}: {len(dup)} duplicate {column} value(s), e.g. {dup.head(3).tolist()}; {fix}")


def _missing_questions(df: pd.DataFrame) -> dict:
    out = {}
    for col in ("question1", "question2"):
        s = df[col]
        nan = int(s.isna().sum())
        empty = int((s.fillna("x").str.strip() == "").sum())
        out[col] = {"nan": nan, "empty": empty}
    return out


def validate(raw_dir: Path) -> dict:
    """Check raw/ against Kaggle's schema; returns the report that goes into manifest.json.

    Raises StageError for what breaks later stages (missing file or column, duplicate ids, labels outside
    {0, 1}); missing/empty questions and an absent sample_submission.csv are warnings.
    """
    raw_dir = Path(raw_dir)
    fix = f"get the original file from {DATA_URL}"
    for name in REQUIRED_FILES:
        if not (raw_dir / name).is_file():
            raise StageError(f"{name} not found in the Quora data ({raw_dir}); expected train.csv and test.csv "
                             f"(plain, .zip or .gz) or quora-question-pairs.zip: {fix}")
    warnings: list[str] = []
    train_path, test_path = raw_dir / "train.csv", raw_dir / "test.csv"
    train = _read_csv(train_path, fix)
    _require_columns(train, TRAIN_COLUMNS, train_path, fix)
    for col in ("id", "qid1", "qid2", "is_duplicate"):
        _require_int(train, col, train_path, fix)
    _require_unique(train, "id", train_path, fix)
    bad = ~train["is_duplicate"].isin([0, 1])
    if bad.any():
        raise StageError(f"{train_path.name}: is_duplicate must be 0 or 1, found {sorted(set(train.loc[bad, 'is_duplicate']))[:5]} "
                         f"in {int(bad.sum())} row(s); {fix}")
    if train["is_duplicate"].nunique() < 2:
        only = int(train["is_duplicate"].iloc[0]) if len(train) else None
        raise StageError(f"{train_path.name}: every one of its {len(train)} pairs has is_duplicate={only}: a model "
                         f"needs both duplicates and non-duplicates to learn from; check the file (a filtered or "
                         f"truncated copy?) or {fix}")
    test = _read_csv(test_path, fix)
    _require_columns(test, TEST_COLUMNS, test_path, fix)
    _require_int(test, "test_id", test_path, fix)
    _require_unique(test, "test_id", test_path, fix)

    missing = {"train.csv": _missing_questions(train), "test.csv": _missing_questions(test)}
    for name, cols in missing.items():
        n_nan = sum(v["nan"] for v in cols.values())
        n_empty = sum(v["empty"] for v in cols.values())
        if n_nan or n_empty:
            warnings.append(f"{name}: {n_nan} missing and {n_empty} blank question(s) (kept; features treat them as '')")

    sub_path = raw_dir / "sample_submission.csv"
    n_sub = None
    if sub_path.is_file():
        sub = pd.read_csv(sub_path, nrows=None)
        _require_columns(sub, SUBMISSION_COLUMNS, sub_path, fix)
        n_sub = len(sub)
        if n_sub != len(test):
            warnings.append(f"sample_submission.csv has {n_sub} rows but test.csv has {len(test)}")
    else:
        warnings.append("sample_submission.csv absent: submissions will be checked against test.csv's test_id")

    n_pos = int(train["is_duplicate"].sum())
    qids = np.concatenate([train["qid1"].to_numpy(), train["qid2"].to_numpy()])
    _, qid_counts = np.unique(qids, return_counts=True)
    for w in warnings:
        log.warning("%s", w)
    return {
        "counts": {"train_rows": len(train), "test_rows": len(test), "sample_submission_rows": n_sub,
                   "train_questions": int(len(qid_counts)), "train_questions_in_several_pairs": int((qid_counts > 1).sum())},
        "class_balance": {"0": len(train) - n_pos, "1": n_pos, "positive_rate": round(n_pos / max(1, len(train)), 4)},
        "missing_questions": missing,
        "excluded": [],
        "warnings": warnings,
    }


def summary_lines(report: dict) -> list[str]:
    c, b = report["counts"], report["class_balance"]
    sub = c["sample_submission_rows"]
    lines = [f"train.csv {c['train_rows']:,} pairs (duplicates {b['positive_rate']:.1%}), "
             f"{c['train_questions']:,} distinct questions, {c['train_questions_in_several_pairs']:,} in several pairs",
             f"test.csv {c['test_rows']:,} pairs; sample_submission.csv "
             + (f"{sub:,} rows" if sub is not None else "absent")]
    return lines
