"""One job in several processes (cl_asr.distributed, `run --processes N`): on CPUs through gloo, the same code
path NCCL takes on GPUs. Three processes on batches of two rows, so one process sits out every step (an empty
shard) and the gradient weights are uneven; evaluation sets of several batches, dealt round-robin. The trained
parameters must be the one-process ones up to float rounding, equal on every process, and the results files
the same."""
import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO
from helpers import run_suite as cli

STRATEGIES = ["recorded_spt_decoder", "recorded_ewc", "recorded_lwf"]  # prompts; FFT + penalty; FFT + distillation


@pytest.fixture(scope="module")
def one_and_three(tmp_path_factory):
    base = tmp_path_factory.mktemp("dp")
    return {n: recorded_run(base, n, "cpu") for n in (1, 3)}  # --device cpu: gloo, even where GPUs exist


def recorded_run(base: Path, n: int, device: str):
    scenario = yaml.safe_load((REPO / "scenarios" / "languages.yaml").read_text())
    scenario["profiles"]["micro"]["eval_batch_size"] = 2  # every test set (3 rows) takes two batches
    (base / "languages_dp.yaml").write_text(yaml.safe_dump(scenario))
    params = base / f"params{n}"
    params.mkdir()
    proc = cli("run", "--scenario", str(base / "languages_dp.yaml"), "--profile", "micro", "--no-progress",
               "--strategies", ",".join(["zero_shot", *STRATEGIES]), "--methods-from",
               str(REPO / "tests" / "data" / "recording_methods.py"), "--out", str(base / f"run{n}"),
               "--processes", str(n), "--device", device, env={"CL_ASR_TEST_PARAMS": str(params)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return base / f"run{n}", params, proc


def assert_same_training(one: Path, many: Path, processes: int, tolerance: float, run_dir: Path) -> None:
    """Every process holds the same parameters bit for bit, and they are the one-process ones within
    `tolerance` of their scale, element by element, except where Adam amplifies float noise: its step is about
    lr x sign(gradient) whatever the gradient's size, so a weight whose gradient is ~0 (noise in the last bits,
    which a sum over shards rounds differently) can move by up to lr per step either way. Those few elements
    (at most 1 in 10^5) must stay within Adam's bound, 2 x lr per step taken."""
    meta = json.loads((run_dir / "run.json").read_text())
    micro = meta["config"]["profile_config"]
    steps_per_experience = -(-micro["n_train"] // micro["batch_size"]) * micro["epochs"]
    for name in STRATEGIES:
        lr = meta["config"]["strategies"][name]["lr"]
        for exp in range(3):
            single = torch.load(one / f"{name}_rank0_exp{exp}.pt")
            ranks = [torch.load(many / f"{name}_rank{r}_exp{exp}.pt") for r in range(processes)]
            for r in range(1, processes):  # every process took the same steps: bit-identical parameters
                assert all(torch.equal(a, b) for a, b in zip(ranks[0], ranks[r])), (name, exp, r)
            diff = torch.cat([(a - b).abs().flatten() for a, b in zip(single, ranks[0])])
            scale = max(a.abs().max().item() for a in single)
            off = diff > tolerance * scale
            adam_bound = 2 * lr * steps_per_experience * (exp + 1)
            assert off.float().mean().item() <= 1e-5, (name, exp, int(off.sum()), diff.numel())
            assert diff.max().item() <= max(tolerance * scale, adam_bound), (name, exp, diff.max().item(), adam_bound)
        # and they did learn something: otherwise the comparison above would prove nothing
        first = torch.load(one / f"{name}_rank0_exp0.pt")
        last = torch.load(one / f"{name}_rank0_exp2.pt")
        if len(first) == len(last):
            assert any(not torch.equal(a, b) for a, b in zip(first, last)), name


def test_three_processes_train_the_one_process_parameters(one_and_three):
    assert_same_training(one_and_three[1][1], one_and_three[3][1], 3, tolerance=1e-4, run_dir=one_and_three[1][0])


def test_three_processes_write_the_one_process_results(one_and_three):
    run1, _, _ = one_and_three[1]
    run3, _, proc = one_and_three[3]
    assert (run3 / "results.jsonl").read_bytes() == (run1 / "results.jsonl").read_bytes()
    assert (run3 / "predictions.jsonl").read_bytes() == (run1 / "predictions.jsonl").read_bytes()
    meta = json.loads((run3 / "run.json").read_text())
    assert meta["status"] == "complete" and meta["speed"]["processes"] == 3
    assert {s.get("processes") for s in meta["strategy_runs"]} == {3}
    assert "--processes 3" in meta["command"]
    assert (run3 / "report.md").is_file() and not (run3 / "checkpoints").exists()
    assert proc.stdout.count("strategy recorded_ewc (seed 0)") == 1  # one process speaks for all


def test_processes_refused_clearly(tmp_path, monkeypatch, capsys):
    from cl_asr.cli import main

    def refused(*args) -> str:
        assert main(["run", "--profile", "micro", *args]) == 2
        return capsys.readouterr().err

    assert "--processes is for --executor local" in refused("--processes", "2", "--executor", "ray",
                                                            "--out", str(tmp_path / "r"))
    assert "--processes must be at least 1" in refused("--processes", "0", "--out", str(tmp_path / "r"))
    monkeypatch.setenv("WORLD_SIZE", "2")  # as if started by torchrun, but without its other variables
    assert "give --out" in refused()
    assert "WORLD_SIZE=2 is set but not RANK" in refused("--out", str(tmp_path / "r"))
    assert not (tmp_path / "r").exists()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_train_the_one_gpu_parameters(tmp_path):
    """The same on GPUs (NCCL). Looser: the micro profile's precision is auto, i.e. bf16 autocast on GPUs."""
    run1, one, _ = recorded_run(tmp_path, 1, "cuda")
    run2, two, _ = recorded_run(tmp_path, 2, "cuda")
    assert_same_training(one, two, 2, tolerance=2e-2, run_dir=run1)
    assert json.loads((run2 / "run.json").read_text())["speed"]["processes"] == 2
