"""The project's own sentence bank (cl_asr/data/sentences/<language>.txt) and its fixed train/test split."""
from __future__ import annotations

import random
from pathlib import Path

SENTENCE_DIR = Path(__file__).parent / "sentences"
SPLIT_SEED = 20261122  # fixed: test sentences must not depend on a run's seed


def available_languages() -> list[str]:
    return sorted(p.stem for p in SENTENCE_DIR.glob("*.txt"))


def load_sentences(language: str) -> list[str]:
    path = SENTENCE_DIR / f"{language}.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"no sentence bank for language {language!r} ({path}); available: {', '.join(available_languages())}"
        )
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    sentences = [line for line in lines if line]
    if len(set(sentences)) != len(sentences):
        dup = next(s for s in sentences if sentences.count(s) > 1)
        raise ValueError(f"{path}: duplicate sentence {dup!r}")
    return sentences


def split_sentences(language: str, n_test_pool: int) -> tuple[list[str], list[str]]:
    """Disjoint (train_pool, test_pool); the same for every run and seed."""
    sentences = load_sentences(language)
    if not 0 < n_test_pool < len(sentences):
        raise ValueError(f"test pool of {n_test_pool} impossible with {len(sentences)} {language} sentences")
    order = list(range(len(sentences)))
    random.Random(f"{SPLIT_SEED}-{language}").shuffle(order)
    test = [sentences[i] for i in order[:n_test_pool]]
    train = [sentences[i] for i in order[n_test_pool:]]
    return train, test
