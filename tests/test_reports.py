"""Comparison reports: seeds, bootstrap intervals, paired tests, `compare` across runs, and the page in a browser."""
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cl_asr.metrics.continual import continual_metrics, continual_metrics_batch
from cl_asr.report import write_report
from cl_asr.report.stats import Bootstrap, DifferentTestSets
from helpers import run_suite as cli



# -- the statistics, on hand-made per-utterance counts ------------------------------------------------------
def preds(system, seed, edits_by_step, sets=("a", "b"), n=20, tokens=10):
    """Prediction rows of a 2-experience scenario (sets a, b) plus a base set z: edits_by_step[step][set] gives
    every utterance's edits in that cell (a number, or a list per utterance)."""
    rows = []
    for step in (-1, 0, 1):
        for name in (*sets, "z"):
            e = edits_by_step.get(step, {}).get(name, 0)
            e = list(e) if isinstance(e, (list, tuple, np.ndarray)) else [e] * n
            rows.append({"system": system, "strategy": system, "seed": seed, "trained_through": step,
                         "eval_on": name, "stream": "test" if name != "z" else "preservation",
                         "ids": [f"{name}{i}" for i in range(n)], "refs": [f"ref {name} {i}" for i in range(n)],
                         "hyps": ["x"] * n, "edits": {"cer": e}, "ref_tokens": {"cer": [tokens] * n}})
    return rows


def boot(rows, **kw):
    return Bootstrap(rows, "cer", ["a", "b"], ["z"], **kw)


def test_batched_continual_metrics_equal_the_definitions():
    rng = np.random.default_rng(1)
    for T in (1, 2, 4):
        new, base, joint = rng.random((T + 1, T)), rng.random((T + 1, 3)), rng.random(T)
        one = continual_metrics(new, base, joint).as_dict()
        batch = continual_metrics_batch(np.stack([new, new * 0.5]), np.stack([base, base]), np.stack([joint, joint]))
        for k, v in one.items():
            assert batch[k][0] == pytest.approx(v), (T, k)
        assert batch["avg_error"][1] == pytest.approx(0.5 * one["avg_error"])


def test_point_estimates_are_the_pooled_rates_and_intervals_contain_them():
    rng = np.random.default_rng(0)
    cells = {s: {n: rng.integers(0, 6, 20) for n in ("a", "b", "z")} for s in (-1, 0, 1)}
    b = boot(preds("m", 0, cells))
    est = b.estimate("m", "avg_error")
    pooled = np.mean([cells[1]["a"].sum() / 200, cells[1]["b"].sum() / 200])
    assert est.point == pytest.approx(pooled)
    assert est.low < est.point < est.high and est.n_seeds == 1 and np.isnan(est.std)
    assert b.cell("m", 0, "a").point == pytest.approx(cells[0]["a"].sum() / 200)
    # learned_error and base_error come from the same cells
    assert b.estimate("m", "learned_error").point == pytest.approx((cells[0]["a"].sum() + cells[1]["b"].sum()) / 400)
    assert b.estimate("m", "base_error").point == pytest.approx(cells[1]["z"].sum() / 200)


def test_paired_comparison_separates_a_real_difference_from_a_tie():
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 10, 20)
    good = {s: {"a": noisy // 3, "b": noisy // 3} for s in (0, 1)}  # a third of the errors, same utterances
    bad = {s: {"a": noisy, "b": noisy} for s in (0, 1)}
    rows = preds("good", 0, good) + preds("bad", 0, bad) + preds("same", 0, bad)
    b = boot(rows)
    d = b.compare("good", "bad", "avg_error")
    assert d.point < 0 and d.significant and d.p < 0.01 and "(n.s.)" not in d.text()
    tie = b.compare("same", "bad", "avg_error")  # identical outputs: the paired difference is exactly 0
    assert tie.point == 0 and tie.low == 0 and tie.high == 0 and not tie.significant and "(n.s.)" in tie.text()


def test_seeds_give_mean_and_std_and_widen_the_interval():
    rows = []
    for seed, e in enumerate([2, 4, 6]):
        rows += preds("m", seed, {1: {"a": e, "b": e}})
    b = boot(rows)
    est = b.estimate("m", "avg_error")
    assert est.point == pytest.approx(0.4) and est.std == pytest.approx(0.2) and est.n_seeds == 3
    # every utterance has the same errors within a seed: only the seed draw moves the replicates
    assert est.low < 0.35 and est.high > 0.45
    assert "± 0.200" in est.text()


def test_different_test_sets_are_refused_by_name():
    rows = preds("m", 0, {}) + preds("n", 0, {})
    rows[-1] = {**rows[-1], "refs": [r + " changed" for r in rows[-1]["refs"]]}  # n's base set z differs
    with pytest.raises(DifferentTestSets, match="test set 'z': n was evaluated on different reference transcripts"):
        boot(rows)


# -- the joint reference: the strategy run.json flags `joint: true`, whatever its name -----------------------
SEQUENTIAL = {-1: {"a": 8, "b": 8, "z": 1}, 0: {"a": 2, "b": 7, "z": 1}, 1: {"a": 4, "b": 3, "z": 2}}
JOINT_TRAINED = {-1: {"a": 8, "b": 8, "z": 1}, 1: {"a": 1, "b": 2, "z": 1}}  # first and last rows only
OTHER_SEQUENTIAL = {-1: {"a": 8, "b": 8, "z": 1}, 0: {"a": 5, "b": 8, "z": 1}, 1: {"a": 6, "b": 5, "z": 3}}


def toy_run(out, strategies):
    """A run directory of a 2-experience scenario (sets a, b; base set z) written by hand: strategies are
    (name, joint flag, edits per utterance by step and set), 20 utterances of 10 characters per set."""
    out.mkdir()
    meta = {"metric": "cer", "experiences": ["a", "b"], "preservation": ["z"],
            "config": {"scenario": "toy", "profile": "micro", "backbone": "tiny:random", "seeds": [0],
                       "profile_config": {"encoder_window_seconds": 10, "epochs": 1, "batch_size": 2,
                                          "max_new_tokens": 6}},
            "strategy_runs": [{"strategy": name, "seed": 0, "description": "", "config": {}, "joint": joint,
                               "trainable_params": 10, "stored_params_per_experience": 10, "stored_bytes": 100,
                               "train_seconds": 1.0, "eval_seconds": 1.0, "peak_memory_mb": 1.0,
                               "decodes": {"computed": 1, "reused": 0}} for name, joint, _ in strategies]}
    (out / "run.json").write_text(json.dumps(meta))
    predictions, results = [], []
    for name, _, cells in strategies:
        rows = [r for r in preds(name, 0, cells) if r["trained_through"] in cells]
        for r in rows:
            del r["system"]
            edits, tokens = sum(r["edits"]["cer"]), sum(r["ref_tokens"]["cer"])
            results.append({"scenario": "toy", "strategy": name, "seed": 0, "trained_through": r["trained_through"],
                            "eval_on": r["eval_on"], "metric": "cer", "value": edits / tokens, "edits": edits,
                            "ref_tokens": tokens, "n_utts": len(r["ids"]), "stream": r["stream"]})
        predictions += rows
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in results))
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in predictions))
    write_report(out)
    summary = pd.read_csv(out / "summary.csv").set_index("strategy")
    intervals = pd.read_csv(out / "summary_intervals.csv").set_index(["strategy", "measure"])["mean"]
    return summary, intervals


def test_the_joint_reference_is_the_strategy_flagged_joint_whatever_its_name(tmp_path):
    summary, intervals = toy_run(tmp_path / "run", [("seq", False, SEQUENTIAL),
                                                    ("everything_at_once", True, JOINT_TRAINED)])
    # R[0][0] = 0.2, R[1][1] = 0.3 against everything_at_once's final 0.1, 0.2
    assert summary.loc["seq", "intransigence"] == pytest.approx(0.1)
    assert intervals["seq", "intransigence"] == pytest.approx(0.1)
    assert summary.loc["everything_at_once", "avg_error"] == pytest.approx(0.15)
    assert np.isnan(summary.loc["everything_at_once", "forgetting"])  # a joint model: no sequential measures
    assert np.isnan(intervals["everything_at_once", "intransigence"])


def test_a_strategy_merely_named_joint_is_not_the_reference(tmp_path):
    summary, intervals = toy_run(tmp_path / "alone", [("seq", False, SEQUENTIAL), ("joint", False, OTHER_SEQUENTIAL)])
    assert summary.intransigence.isna().all() and np.isnan(intervals["seq", "intransigence"])  # no reference
    # "joint" is measured as the sequential strategy it is: forgetting on the earlier experience a, 0.6 - 0.5
    assert summary.loc["joint", "forgetting"] == pytest.approx(0.1)
    assert intervals["joint", "forgetting"] == pytest.approx(0.1)

    summary, intervals = toy_run(tmp_path / "both", [("seq", False, SEQUENTIAL), ("joint", False, OTHER_SEQUENTIAL),
                                                     ("everything_at_once", True, JOINT_TRAINED)])
    # against everything_at_once (0.1, 0.2), not against "joint"'s final row (0.6, 0.5), which would give -0.3
    assert summary.loc["seq", "intransigence"] == pytest.approx(0.1)
    assert intervals["seq", "intransigence"] == pytest.approx(0.1)
    assert summary.loc["joint", "intransigence"] == pytest.approx(((0.5 - 0.1) + (0.5 - 0.2)) / 2)
    assert intervals["joint", "intransigence"] == pytest.approx(((0.5 - 0.1) + (0.5 - 0.2)) / 2)


def test_the_page_is_the_markdown_rendered_with_images_embedded_and_data_shown_as_is(tmp_path):
    import base64
    from io import BytesIO

    from PIL import Image

    from cl_asr.report.render import Block, to_html, to_markdown

    Image.new("RGB", (3, 2), "white").save(tmp_path / "fig.png")
    hyp = "<b>bold</b> *laughs* _x_ a|b [m](u) `c` \\ & zero_shot"
    blocks = [Block("h1", "T"), Block("p", "- **a**: `x`\n- b"), Block("p", "one\ntwo"),
              Block("table", pd.DataFrame([{"strategy": "zero_shot", "hypothesis": hyp, "x": 0.5, "n": 12345}])),
              Block("img", "fig.png", "a <figure>"), Block("code", "x < y")]
    md = to_markdown(blocks)
    assert "| zero_shot | <b>bold</b> \\*laughs\\* \\_x\\_ a\\|b [m]\\(u) \\`c\\` \\\\ & zero_shot | 0.500 | 12,345 |" in md
    page = to_html(blocks, tmp_path, "a <title>")
    assert "<title>a &lt;title&gt;</title>" in page and "<h1>T</h1>" in page
    assert "<ul>\n<li><strong>a</strong>: <code>x</code></li>\n<li>b</li>\n</ul>" in page
    assert "<p>one\ntwo</p>" in page and "<pre><code>x &lt; y\n</code></pre>" in page
    assert "<th>strategy</th>\n<th>hypothesis</th>\n<th>x</th>\n<th>n</th>" in page
    # data is shown as it is: no tag, emphasis, link or code made of a transcript
    assert "<td>&lt;b&gt;bold&lt;/b&gt; *laughs* _x_ a|b [m](u) `c` \\ &amp; zero_shot</td>" in page
    sources = re.findall(r"<img alt='a &lt;figure&gt;' src='data:image/png;base64,([^']+)'>", page)
    assert len(sources) == 1 and "fig.png" not in page
    with Image.open(BytesIO(base64.b64decode(sources[0]))) as im:
        assert im.size == (3, 2)


# -- the CLI: several seeds, compare, refusal, the page ----------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    a, b = root / "A", root / "B"
    proc = cli("run", "--scenario", "languages", "--strategies", "zero_shot,spt_decoder,spt_entire",
               "--seeds", "0,1", "--profile", "micro", "--out", str(a), "--no-progress")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc = cli("run", "--scenario", "languages", "--strategies", "zero_shot,spt_entire", "--seed", "2",
               "--profile", "micro", "--out", str(b), "--no-progress", "--no-report")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    c = root / "C"
    proc = cli("compare", str(a), str(b), "--out", str(c))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return a, b, c


def test_seeds_run_every_strategy_per_seed_and_the_report_has_intervals(runs):
    a, _, _ = runs
    summary = pd.read_csv(a / "summary.csv")
    assert sorted(zip(summary.strategy, summary.seed)) == sorted(
        (s, seed) for s in ("zero_shot", "spt_decoder", "spt_entire") for seed in (0, 1))
    assert json.loads((a / "run.json").read_text())["config"]["seeds"] == [0, 1]
    preds_ = [json.loads(line) for line in (a / "predictions.jsonl").read_text().splitlines()]
    assert all(len(p["edits"]["cer"]) == len(p["ids"]) == len(p["ref_tokens"]["cer"]) for p in preds_)
    # per-utterance counts add up to the results file's pooled counts
    results = pd.read_json(a / "results.jsonl", lines=True)
    p = preds_[5]
    r = results[(results.strategy == p["strategy"]) & (results.seed == p["seed"]) & (results.metric == "cer")
                & (results.trained_through == p["trained_through"]) & (results.eval_on == p["eval_on"])].iloc[0]
    assert sum(p["edits"]["cer"]) == r.edits and sum(p["ref_tokens"]["cer"]) == r.ref_tokens

    intervals = pd.read_csv(a / "summary_intervals.csv")
    avg = intervals[intervals.measure == "avg_error"].set_index("strategy")
    means = summary.groupby("strategy").avg_error.mean()
    for s in means.index:  # the interval file's means are the summary's means over seeds
        assert avg.loc[s, "mean"] == pytest.approx(means[s])
        assert avg.loc[s, "ci_low"] <= avg.loc[s, "mean"] <= avg.loc[s, "ci_high"] and avg.loc[s, "n_seeds"] == 2
    md = (a / "report.md").read_text()
    assert re.search(r"\| zero_shot \| 2 \| 0\.\d{3} ± 0\.000 \[0\.\d{3}, 0\.\d{3}\] \| best \|", md), md[:3000]
    for section in ["## Is the ranking real? Paired differences", "## Error over the course of training",
                    "## Worst utterances", "## The papers' claims on this run", "## Cost",
                    "## Error against trainable and stored parameters"]:
        assert section in md
    assert "not significant (p=" in md  # spt_entire vs spt_decoder on the tiny model: a tie, said so


def test_compare_aligns_runs_and_pairs_the_same_strategy(runs):
    a, b, c = runs
    md = (c / "report.md").read_text()
    assert "# cl_asr comparison: A, B" in md and "A/zero_shot" in md and "B/spt_entire" in md
    section = md.split("## The same strategy across runs")[1].split("\n## ")[0]
    assert "| zero_shot | B | A | +0.000 [+0.000, +0.000] (n.s.) |" in section  # same frozen model, same data
    assert "| spt_entire | B | A |" in section
    intervals = pd.read_csv(c / "summary_intervals.csv")
    assert {"A/zero_shot", "A/spt_decoder", "A/spt_entire", "B/zero_shot", "B/spt_entire"} == set(intervals.strategy)
    summary = pd.read_csv(c / "summary.csv")
    assert set(summary.run) == {"A", "B"}


def test_compare_refuses_runs_whose_test_sets_differ(runs, tmp_path):
    a, b, _ = runs
    changed = tmp_path / "B_changed"
    shutil.copytree(b, changed)
    lines = (changed / "predictions.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["ids"][0] = "someone-else"  # other ids alone: the same set by its content checksum, compared
    lines[0] = json.dumps(first)
    (changed / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    renamed = cli("compare", str(a), str(changed), "--out", str(tmp_path / "renamed"))
    assert renamed.returncode == 0, renamed.stderr
    # other audio under the same ids and transcripts (its content checksum differs): refused
    meta = json.loads((changed / "run.json").read_text())
    meta["content_checksums"][f"{first['stream']}/{first['eval_on']}"] = "0" * 32
    (changed / "run.json").write_text(json.dumps(meta))
    proc = cli("compare", str(a), str(changed), "--out", str(tmp_path / "C"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"test set '{first['eval_on']}' holds different audio or other content" in proc.stderr
    assert not (tmp_path / "C" / "report.md").exists()
    # other reference transcripts: refused
    first["refs"][0] = "a different sentence"
    lines[0] = json.dumps(first)
    (changed / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    proc = cli("compare", str(a), str(changed), "--out", str(tmp_path / "C"))
    assert proc.returncode == 2 and f"test set '{first['eval_on']}' holds different reference transcripts" in proc.stderr
    one = cli("compare", str(a), "--out", str(tmp_path / "D"))
    assert one.returncode == 2 and "at least two run directories" in one.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CL_ASR_REQUIRE_BROWSER"),
                    reason="Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")
def test_report_page_in_headless_chromium(runs, tmp_path):
    """The page as a person sees it: every image decodes, no console errors; a screenshot is kept."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "CL_ASR_REQUIRE_BROWSER is set but chromium is not installed"
    _, _, c = runs
    shots = Path(os.environ.get("CL_ASR_ARTIFACTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            for name, page_path in [("run", runs[0] / "report.html"), ("comparison", c / "report.html")]:
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                problems = []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
                page.goto(page_path.as_uri(), wait_until="load")
                images = page.evaluate(
                    "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
                # one per figure: final error, curves, forgetting, error vs parameters, pairwise differences,
                # and an error matrix per strategy (3 in the run, 5 in the comparison)
                assert len(images) == {"run": 5 + 3, "comparison": 5 + 5}[name], images
                broken = [alt for alt, complete, w, h in images if not complete or w == 0 or h == 0]
                assert not broken, f"images that did not decode: {broken}"
                assert page.evaluate("document.querySelectorAll('table').length") >= 5
                assert "Paired differences" in page.inner_text("body")
                shot = shots / f"report_{name}.png"
                page.screenshot(path=str(shot), full_page=True)
                assert not problems, problems
                from PIL import Image

                with Image.open(shot) as im:
                    assert im.width >= 1000 and im.height > 2000  # the whole page, not a blank viewport
        finally:
            browser.close()
