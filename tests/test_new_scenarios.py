"""The code_switching, speakers and text_domains scenarios and their methods: metrics (MER and its parts,
entity error rate), mixing, ts_prompt's speaker conditioning, text_spt's two steps, text-only batches, and a
micro benchmark of each scenario through the CLI."""
import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from cl_asr.cl.collate import ASRCollator
from cl_asr.data.mixing import MixSpec, active_power, mix
from cl_asr.methods import Target, get_method, method_config
from cl_asr.metrics.text import mixed_tokens, normalize, score
from helpers import run_suite as cli



# -- metrics ---------------------------------------------------------------------------------------------------
def test_mixed_error_rate_counts_chinese_characters_and_other_words_in_simplified_script():
    assert normalize("我們明天的 Meeting 要取消嗎？", "zh-en") == "我们明天的 meeting 要取消吗"
    assert mixed_tokens("我们明天的 meeting 要 cancel 吗") == ["我", "们", "明", "天", "的", "meeting", "要", "cancel", "吗"]
    # Traditional vs Simplified spelling of the same words is no error; one deletion + one insertion are two
    c = score(["我们明天的 meeting 要 cancel 吗"], ["我們明天 meeting 要 cancel 吗 ok"], "zh-en",
              ("mer", "mer_zh", "mer_en", "wer"))
    assert (c["mer"].edits, c["mer"].ref_tokens) == (2, 9)
    assert (c["mer_zh"].edits, c["mer_zh"].ref_tokens) == (1, 7)  # the deleted 的
    assert (c["mer_en"].edits, c["mer_en"].ref_tokens) == (1, 2)  # the inserted 'ok'
    assert c["wer"].ref_tokens == 5  # WER would count whole runs of characters as words: not MER


def test_mer_parts_use_segments_for_latin_pairs_and_add_up_to_mer():
    refs = ["Mañana tengo un meeting con el team", "Ayer fui al banco, but it was closed."]
    hyps = ["mañana tengo un mitin con el team please", "ayer fue al banco but it closed"]
    segs = [json.dumps([["es", "Mañana tengo un"], ["en", "meeting"], ["es", "con el"], ["en", "team"]]),
            json.dumps([["es", "Ayer fui al banco,"], ["en", "but it was closed."]])]
    c = score(refs, hyps, "es-en", ("mer", "mer_es", "mer_en"), [{"segments": s} for s in segs])
    assert c["mer_es"].ref_tokens == 5 + 4 and c["mer_en"].ref_tokens == 2 + 4
    assert c["mer_es"].edits == 1  # fui -> fue
    assert c["mer_en"].edits == 3  # meeting -> mitin, inserted 'please' (after 'team'), deleted 'was'
    assert c["mer_es"].edits + c["mer_en"].edits == c["mer"].edits
    with pytest.raises(ValueError, match="segments"):  # segments that do not match the transcript are refused
        score(["hola amigo"], ["hola"], "es-en", ("mer_es",), [{"segments": json.dumps([["es", "hola"]])}])


def test_entity_error_rate_counts_entities_not_recognised_intact():
    c = score(["Play Thriller by Michael Jackson.", "Book the Becker Suites for July fifth."],
              ["play thriller by michel jackson", "book the becker suites for july fifth"], "en", ("eer", "wer"),
              [{"entities": ["Thriller", "Michael Jackson"]}, {"entities": ["Becker Suites", "July fifth"]}])
    assert (c["eer"].edits, c["eer"].ref_tokens) == (1, 4)
    assert c["wer"].edits == 1


# -- mixing ----------------------------------------------------------------------------------------------------
def _tone(seconds, freq, amp=0.3):
    t = np.arange(int(seconds * 16000)) / 16000
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_mixtures_have_the_requested_overlap_and_signal_to_interference_ratio():
    target, other = _tone(2.0, 220, 0.5), _tone(2.0, 330, 0.1)
    for seed in range(6):  # the interferer starts before or after the target, at random
        out, facts = mix(target, [other], MixSpec(overlap=0.5, sir_db=6.0), np.random.default_rng(seed))
        assert facts["overlap"] == [0.5] and facts["offsets"][0] in (-16000, 16000)
        start = facts["target_start"]
        interferer = out.astype(np.float64).copy()
        interferer[start:start + len(target)] -= target
        assert abs(10 * np.log10(active_power(target) / active_power(interferer)) - 6.0) < 0.05
    out, facts = mix(target, [other, other], MixSpec(overlap=0.5, sir_db=0.0, noise_snr_db=20, max_seconds=2.5),
                     np.random.default_rng(0))
    assert len(out) == 40000 and facts["cropped_to_seconds"] == 2.5  # interferers cropped, never the target
    assert 0 <= facts["target_start"] <= 8000
    with pytest.raises(ValueError, match="overlap"):
        MixSpec(overlap=1.5)


# -- batches ---------------------------------------------------------------------------------------------------
def test_text_only_rows_give_no_features_and_mixed_batches_are_refused(tiny):
    coll = ASRCollator(tiny.tokenizer, tiny.feature_extractor, {"en": "en"})
    text = [{"id": "t1", "text": "play some jazz", "language": "en"}]
    batch = coll(text)
    assert batch["input_features"] is None and batch["labels"].shape[0] == 1
    audio = {"id": "a1", "text": "hi", "language": "en", "audio": {"array": np.zeros(16000), "sampling_rate": 16000},
             "enrolment": np.ones(256, dtype=np.float32)}
    assert coll([audio])["enrolment"].shape == (1, 256)
    with pytest.raises(ValueError, match="mixes rows with and without audio"):
        coll(text + [audio])


# -- ts_prompt -------------------------------------------------------------------------------------------------
L = 3
TRAIN = Target("train", 0, "2mix", "en", "en")


def _make(name, tiny, **overrides):
    cfg = method_config(name, None, prompt_length=L)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    model = copy.deepcopy(tiny.model).eval()
    method = get_method(name)(cfg, model, tiny.tokenizer, seed=0)
    method.setup()
    return method, model


def test_ts_prompt_conditions_on_the_speaker_and_trains_only_its_prompts(tiny):
    method, model = _make("ts_prompt", tiny)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    method.before_experience(TRAIN, [{"text": "hello there"}])
    d, D = model.config.d_model, 256
    params = method.trainable_parameters()
    assert sum(p.numel() for p in params) == 2 * (L * d + (D + 1) * d)  # encoder + decoder site: prompt + projection
    assert method.stored_parameters_per_experience() == 2 * (L * d + (D + 1) * d)
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 80, 3000, generator=g)
    spk = torch.nn.functional.normalize(torch.randn(2, D, generator=g), dim=-1)
    opt = torch.optim.AdamW(method.param_groups(), lr=1e-2)
    dec = torch.tensor([[50258, 50259, 50359, 50363, 400, 500]] * 2)
    for _ in range(2):
        opt.zero_grad()
        with method.route(TRAIN, {"enrolment": spk}) as route:
            assert len(route.decoder_prefix) == 1 + L + 1  # <|startofprev|>, the speaker vector, L prompts
            prefix = torch.tensor([route.decoder_prefix] * 2)
            labels = torch.cat([torch.full((2, prefix.shape[1] + 3), -100), torch.tensor([[400, 500, 50257]] * 2)], 1)
            model(input_features=feats, decoder_input_ids=torch.cat([prefix, dec], 1), labels=labels).loss.backward()
        opt.step()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # the backbone is frozen
    # after training, the same audio with two different speakers gives different encoder outputs
    with method.route(TRAIN, {"enrolment": spk}):
        out = model.model.encoder(torch.stack([feats[0], feats[0]])).last_hidden_state
    assert not torch.allclose(out[0], out[1])
    assert method.capabilities.conditioning == ("enrolment",)  # the loop hands each batch's embeddings to route
    with pytest.raises(ValueError, match="enrolment"):
        with method.route(TRAIN, {"enrolment": None}):
            pass


# -- text_spt --------------------------------------------------------------------------------------------------
def test_text_spt_learns_the_prompt_first_then_the_decoder(tiny):
    method, model = _make("text_spt", tiny, prompt_length=L)
    assert [method.phase_for_epoch(e, 4) for e in range(4)] == ["prompt", "prompt", "decoder", "decoder"]
    assert method.phase_for_epoch(0, 1) == "prompt"
    with pytest.raises(ValueError, match="text-only"):
        method.before_experience(TRAIN, [{"text": "x", "audio": {}}])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dec = torch.tensor([[50258, 50259, 50359, 50363, 400, 500]] * 2)
    labels = torch.tensor([[-100, -100, -100, 400, 500, 50257]] * 2)

    def steps(phase):
        method.set_phase(phase)
        params = method.trainable_parameters()
        opt = torch.optim.AdamW(method.param_groups(), lr=1e-2)
        for _ in range(2):
            opt.zero_grad()
            states = method.text_only_encoder_states(2, "cpu", torch.float32)
            model(encoder_outputs=(states,), decoder_input_ids=dec, labels=labels).loss.backward()
            opt.step()
        return params

    method.set_phase("prompt")
    method.before_experience(TRAIN, [{"text": "play some jazz"}])
    prompt0 = method.prompts["0"].detach().clone()
    assert prompt0.shape == (L, model.config.d_model)
    assert steps("prompt") == [method.prompts["0"]]
    assert not torch.equal(method.prompts["0"], prompt0)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # step 1: model untouched
    prompt1 = method.prompts["0"].detach().clone()
    steps("decoder")
    assert torch.equal(method.prompts["0"], prompt1)  # step 2: the prompt stays, the decoder learns
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".decoder." in n for n in changed)


# -- micro benchmarks through the CLI -------------------------------------------------------------------------
def micro(tmp_path, scenario, strategies):
    out = tmp_path / scenario
    proc = cli("run", "--scenario", scenario, "--strategies", strategies, "--profile", "micro", "--out", str(out),
               "--no-progress")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = pd.DataFrame([json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()])
    return out, rows, json.loads((out / "run.json").read_text())


def test_code_switching_micro_benchmark(tmp_path):
    out, df, meta = micro(tmp_path, "code_switching", "zero_shot,spt_entire")
    assert meta["experiences"] == ["es-en", "de-en", "zh-en"] and meta["preservation"] == ["es", "en", "de", "zh"]
    assert meta["metric"] == "mer"
    final = df[df.trained_through == 2]
    for strategy in ("zero_shot", "spt_entire"):
        got = final[final.strategy == strategy].groupby("eval_on").metric.apply(set).to_dict()
        assert got["zh-en"] == {"mer", "mer_zh", "mer_en", "wer", "cer"}
        assert got["es-en"] == {"mer", "mer_es", "mer_en", "wer", "cer"}
        assert got["zh"] == {"mer", "wer", "cer"}
    parts = df[df.metric.str.startswith("mer")].pivot_table(index=["strategy", "trained_through", "eval_on"],
                                                            columns="metric", values="edits", aggfunc="first")
    cs = parts.dropna(subset=["mer_en"])
    assert len(cs) == 2 * 4 * 3  # strategies x rows of the matrix x code-switched sets: every cell has its parts
    assert (cs[["mer_es", "mer_de", "mer_zh"]].fillna(0).sum(axis=1) + cs.mer_en == cs.mer).all()
    md = (out / "report.md").read_text()
    assert "## Other metrics after the last experience" in md and "MER on the zh part" in md


def test_speakers_micro_benchmark_with_ts_prompt(tmp_path):
    out, df, meta = micro(tmp_path, "speakers", "zero_shot,spt_entire,ts_prompt")
    assert meta["experiences"] == ["2mix", "2mix_noisy_new_voices", "3mix"]
    assert meta["preservation"] == ["single_talker"]
    assert set(df.strategy) == {"zero_shot", "spt_entire", "ts_prompt"}
    assert len(df[df.strategy == "ts_prompt"]) == 4 * 4 * 2  # 4 rows x 4 sets x (wer, cer)
    runs = {r["strategy"]: r for r in meta["strategy_runs"]}
    assert set(runs) == {"zero_shot", "spt_entire", "ts_prompt"} and not any(r.get("failure") for r in runs.values())


def test_text_domains_micro_benchmark_with_text_spt(tmp_path):
    out, df, meta = micro(tmp_path, "text_domains", "zero_shot,spt_entire,text_spt,spt_encoder")
    assert meta["scenario_settings"]["text_only_training"] is True
    final = df[df.trained_through == 2]
    assert set(final[final.eval_on == "music"].metric) == {"wer", "eer", "cer"}
    assert set(final[final.eval_on == "general_en"].metric) == {"wer", "cer"}
    assert set(df.strategy) == {"zero_shot", "spt_entire", "text_spt"}
    failed = [r for r in meta["strategy_runs"] if r.get("failure")]
    assert [r["strategy"] for r in failed] == ["spt_encoder"] and "no audio" in failed[0]["failure"]["reason"]
    assert "| spt_encoder | 0 | cannot run |" in (out / "report.md").read_text()
    runs = {r["strategy"]: r for r in meta["strategy_runs"] if not r.get("failure")}
    assert len(runs["text_spt"]["train_seconds_per_experience"]) == 3


def test_list_scenarios_shows_experiences_metric_and_data_source():
    proc = cli("list", "scenarios")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for name in ("languages", "code_switching", "speakers", "text_domains", "fleurs_unseen", "cv_clmasr", "mls",
                 "ascend"):
        assert f"\n  {name}\n" in text, name
    assert "experiences:  es-en -> de-en -> zh-en" in text and "metric:       MER" in text
    assert "experiences:  ast -> ckb -> kea" in text and "data:         FLEURS" in text
    assert "does not load" not in text
