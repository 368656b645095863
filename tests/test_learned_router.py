"""The learned router (`eval_routing: learned`, cl_asr/methods/learned_router.py): streaming LDA over the plain
backbone's encoder features, with 'no set' for utterances far from every learned experience; usable by every
set-per-experience strategy, as a routing twin too."""
import json

import pytest
import torch

from cl_asr.cli import main
from helpers import strategy_rows
from cl_asr.methods import learned_router
from cl_asr.methods.learned_router import StreamingLDARouter, speech_frame_features

MICRO = ["run", "--scenario", "languages", "--profile", "micro", "--no-progress", "--no-report", "--set", "n_train=2"]
TWIN = "spt_decoder[eval_routing=learned]"


def _clusters(d=16, n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(d)[:4] * 12.0  # four classes, 12 standard deviations apart
    return [c + torch.randn(n, d, generator=g) for c in centres]


def test_the_router_routes_to_the_nearest_learned_class_and_rejects_what_is_far_from_all(monkeypatch):
    # a factor of 3 on an unseen utterance's typical distance: every held-out row of a learned class is inside
    # (at the calibrated 1.0 about a third of an isotropic class is not; see the next tests)
    monkeypatch.setattr(learned_router, "REJECT_FACTOR", 3.0)
    train, held_out = _clusters(seed=0), _clusters(seed=1)
    router = StreamingLDARouter()
    for i, x in enumerate(train[:3]):
        router.add(str(i), i, x)
    assert router.keys == ["0", "1", "2"]
    for i in range(3):
        assert router.route(held_out[i], router.keys) == [str(i)] * len(held_out[i])
    assert router.route(held_out[3], router.keys) == [None] * len(held_out[3])  # never learned: no set
    # only the classes asked for compete: class 2's utterances are far from 0 and 1, so they get no set
    assert router.route(held_out[2], ["0", "1"]) == [None] * len(held_out[2])
    assert router.route(held_out[0], []) == [None] * len(held_out[0])


def test_only_finished_experiences_are_routed_to_and_shared_mode_accumulates_one_class():
    train = _clusters()
    router = StreamingLDARouter()
    for i, x in enumerate(train[:3]):
        router.add(str(i), i, x)
    assert router.keys_learned(0) == [] and router.keys_learned(2) == ["0", "1"]
    shared = StreamingLDARouter()
    for i, x in enumerate(train[:2]):
        shared.add("shared", i, x)
    assert shared.keys == ["shared"] and shared.counts["shared"] == 80
    torch.testing.assert_close(shared.sums["shared"], torch.cat(train[:2]).double().sum(dim=0))


def test_what_the_router_stores_in_closed_form():
    d, k = 16, 3
    router = StreamingLDARouter()
    for i, x in enumerate(_clusters(d)[:k]):
        router.add(str(i), i, x)
    # a sum and a count per class, one d x d outer sum, the held-out inflation
    assert router.stored_numbers() == k * (d + 1) + d * d + 1


def test_the_rejection_threshold_follows_the_factor():
    train, held_out = _clusters(seed=0), _clusters(seed=1)
    router = StreamingLDARouter()
    router.add("0", 0, train[0])
    between = (held_out[0] + held_out[1]) / 2  # half way to another cluster: 6 sd from class 0
    old = learned_router.REJECT_FACTOR
    try:
        learned_router.REJECT_FACTOR = 1e9
        assert router.route(between, ["0"]) == ["0"] * len(between)
        learned_router.REJECT_FACTOR = 1.0
        assert router.route(between, ["0"]) == [None] * len(between)
    finally:
        learned_router.REJECT_FACTOR = old


def test_the_threshold_is_an_unseen_utterances_distance_not_the_in_sample_one():
    # 40 training rows in 64 dimensions: in-sample distances are smaller than an unseen utterance's, so a threshold
    # on them rejects much of the class's own new utterances (the first experience's, in a real stream)
    g = torch.Generator().manual_seed(0)
    scales = torch.logspace(0, -2, 64)
    train, unseen = torch.randn(40, 64, generator=g) * scales, torch.randn(200, 64, generator=g) * scales
    router = StreamingLDARouter()
    router.add("0", 0, train)
    accepted = lambda: sum(r == "0" for r in router.route(unseen, ["0"])) / len(unseen)  # noqa: E731
    assert learned_router.REJECT_FACTOR == 1.0 and router.inflation > 1.3
    assert accepted() > 0.6
    router.inflation = 1.0  # the in-sample distance alone
    assert accepted() < 0.4
    small = StreamingLDARouter()
    small.add("0", 0, train[:9])  # under two rows per held-out fold: nothing to measure, no inflation
    assert small.inflation == 1.0


def test_speech_features_average_the_speech_frames_only(tiny):
    model = tiny.model.eval()
    n_mels, frames = model.config.num_mel_bins, 2 * model.config.max_source_positions
    feats = torch.full((2, n_mels, frames), -0.5)
    feats[0, :, :10] = -0.4 + torch.rand(n_mels, 10)  # 10 frames of 'speech' above the floor, then padding
    out = speech_frame_features(model, feats)
    states = model.get_encoder()(input_features=feats).last_hidden_state
    torch.testing.assert_close(out[0], states[0, :5].float().mean(dim=0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out[1], states[1].float().mean(dim=0), rtol=1e-5, atol=1e-5)  # all floor: every frame



@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("learned")
    assert main([*MICRO, "--strategies", f"spt_decoder,{TWIN}", "--out", str(base / "pair")]) == 0
    assert main([*MICRO, "--strategies", TWIN, "--out", str(base / "alone")]) == 0
    return base


def test_learned_routing_runs_as_a_twin_and_equals_training_it_alone(runs):
    pair, alone = runs / "pair", runs / "alone"
    for what in ("results", "predictions"):
        assert strategy_rows(pair, TWIN, what) == strategy_rows(alone, TWIN, what)
    rows = strategy_rows(pair, TWIN)
    assert rows and {r["routing"] for r in rows} == {"learned"}
    records = {r["strategy"]: r for r in json.loads((pair / "run.json").read_text())["strategy_runs"]}
    assert records[TWIN]["info"]["evaluated_from"] == "spt_decoder"
    # before any training nothing is learned: every utterance goes to no set, which is what the oracle picks too
    untrained = [r for r in rows if r["trained_through"] == -1 and r["stream"] == "test"]
    assert untrained and all(r["routing_accuracy"] == 1.0 for r in untrained)
    assert all(0.0 <= r["routing_accuracy"] <= 1.0 for r in rows if r["stream"] == "test")


@pytest.mark.parametrize("strategy", ["lora", "adapter"])
def test_every_set_per_experience_family_routes_with_the_learned_router(strategy, tmp_path):
    name = f"{strategy}[eval_routing=learned]"
    assert main([*MICRO, "--strategies", name, "--out", str(tmp_path / "run")]) == 0
    rows = strategy_rows(tmp_path / "run", name)
    assert rows and {r["routing"] for r in rows} == {"learned"}
