"""CL-MASR's measures beside ours (AWER, BWT, IM against joint, FWT against single-task fine-tuning) and the
single_task reference strategy that FWT needs."""
import numpy as np
import pandas as pd
import pytest
import torch

from cl_asr.core import Target
from cl_asr.methods import get_method, method_config
from cl_asr.metrics.continual import clmasr_metrics
from cl_asr.report.tables import summary

# W: rows before training, after e0, after e1; columns e0, e1
W = np.array([[0.9, 0.8], [0.3, 0.7], [0.5, 0.2]])


def test_the_formulas():
    m = clmasr_metrics(W, joint_final=np.array([0.25, 0.15]), single_diag=np.array([0.4, 0.3]))
    assert m["clmasr_awer"] == pytest.approx((0.5 + 0.2) / 2)
    assert m["clmasr_bwt"] == pytest.approx(0.3 - 0.5)  # forgetting of e0: negative
    assert m["clmasr_im"] == pytest.approx(((0.3 - 0.25) + (0.2 - 0.15)) / 2)
    assert m["clmasr_fwt"] == pytest.approx(((0.4 - 0.3) + (0.3 - 0.2)) / 2)
    assert np.isnan(clmasr_metrics(W)["clmasr_im"]) and np.isnan(clmasr_metrics(W)["clmasr_fwt"])


def _rows(strategy, matrix, steps=(-1, 0, 1)):
    out = []
    for step, row in zip(steps, matrix):
        for name, value in zip(("e0", "e1"), row):
            for metric in ("cer", "wer"):
                out.append({"scenario": "s", "strategy": strategy, "seed": 0, "trained_through": step, "eval_on": name,
                            "metric": metric, "value": value, "stream": "test", "n_utts": 1})
    return out


def test_the_summary_has_them_against_the_runs_joint_and_single_task_references():
    joint = np.array([[0.9, 0.8], [0.25, 0.15]])
    single = np.array([[0.9, 0.8], [0.4, 0.8], [0.9, 0.3]])  # diagonal: each experience fine-tuned alone
    results = pd.DataFrame(_rows("fft", W) + _rows("joint", joint, (-1, 1)) + _rows("single_task", single))
    meta = {"metric": "cer", "experiences": ["e0", "e1"], "preservation": [], "config": {"scenario": "s"},
            "strategy_runs": [{"strategy": "fft", "seed": 0}, {"strategy": "joint", "seed": 0, "joint": True},
                              {"strategy": "single_task", "seed": 0, "single_task": True}]}
    table = summary(meta, results).set_index("strategy")
    assert table.loc["fft", "clmasr_im"] == pytest.approx(0.05)  # ((0.3 - 0.25) + (0.2 - 0.15)) / 2
    assert table.loc["fft", "clmasr_fwt"] == pytest.approx(0.1)
    assert table.loc["joint", "clmasr_awer"] == pytest.approx(0.2) and np.isnan(table.loc["joint", "clmasr_fwt"])
    assert table.loc["single_task", "clmasr_fwt"] == pytest.approx(0.0)  # against itself


def test_single_task_restarts_every_experience_from_the_pretrained_weights(tiny):
    import copy

    method = get_method("single_task")(method_config("single_task"), copy.deepcopy(tiny.model), tiny.tokenizer)
    method.setup()
    assert method.capabilities.single_task and not method.capabilities.joint
    before = {k: v.clone() for k, v in method.model.state_dict().items()}
    with torch.no_grad():
        for p in method.model.parameters():
            p.add_(0.01)  # what training on the first experience did
    method.before_experience(Target("train", 1, "e1", "en", "en"), [])
    assert all(torch.equal(before[k], v) for k, v in method.model.state_dict().items())
