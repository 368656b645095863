"""The project's own sentence bank (cl_asr/data/sentences/<language>.txt) and its fixed train/test split, and
the separate dev sentences of a language (<language>.dev.txt) for scenarios whose plans draw from the whole bank
(the synthetic speakers scenario)."""
from __future__ import annotations

import random
import re
from pathlib import Path

SENTENCE_DIR = Path(__file__).parent / "sentences"
SPLIT_SEED = 20261122  # fixed: test sentences must not depend on a run's seed


def available_languages() -> list[str]:
    return sorted(p.stem for p in SENTENCE_DIR.glob("*.txt") if "." not in p.stem)  # not <language>.dev.txt


def load_sentences(language: str) -> list[str]:
    path = SENTENCE_DIR / f"{language}.txt"
    if not path.is_file():
        raise FileNotFoundError(
            f"no sentence bank for language {language!r} ({path}); available: {', '.join(available_languages())}"
        )
    return _read_lines(path)


def dev_sentences(language: str) -> list[str]:
    """The dev sentences of `language` (<language>.dev.txt, in file order): none of them is in the language's
    bank (<language>.txt), so they are disjoint from every train and test sentence drawn from it."""
    path = SENTENCE_DIR / f"{language}.dev.txt"
    if not path.is_file():
        have = sorted(p.name.split(".")[0] for p in SENTENCE_DIR.glob("*.dev.txt"))
        raise FileNotFoundError(f"no dev sentences for language {language!r} ({path}); languages with dev "
                                f"sentences: {', '.join(have) or 'none'}")
    sentences = _read_lines(path)
    bank = {_plain(s) for s in load_sentences(language)}
    shared = [s for s in sentences if _plain(s) in bank]
    if shared:
        raise ValueError(f"{path}: {len(shared)} dev sentence(s) are also in {language}.txt (e.g. {shared[0]!r}): "
                         f"dev sentences must be disjoint from the bank's train and test sentences")
    return sentences


def _plain(sentence: str) -> str:
    """Case, punctuation and spacing do not make a sentence different."""
    return " ".join(re.sub(r"[^\w\s]", " ", sentence.casefold()).split())


def _read_lines(path: Path) -> list[str]:
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
