import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny():
    """The tiny random Whisper (real tokenizer) shared by unit tests; tests must not modify it."""
    from cl_asr.backbones import load_backbone

    return load_backbone("tiny:random", seed=0)


@pytest.fixture
def tiny_model(tiny):
    import copy

    return copy.deepcopy(tiny.model).eval()


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A private CL_ASR_CACHE for tests that check caching itself."""
    monkeypatch.setenv("CL_ASR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
