"""benchmarks/gpu/: the GPU benchmark prepared and checked on the CPU, so that a lent GPU's minutes go to the run.

End to end: run_gpu.py on the micro profile with every distribution the GPU machine lacks hidden, except the
wheels pack.py carries (benchmarks/gpu/as_on_gpu/). Units: pack's parts and backbone encoding round trip and
refuse corruption; utilisation's FLOP count matches the closed form."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO

GPU = REPO / "benchmarks" / "gpu"
STRATEGIES = ["zero_shot", "fft", "spt_entire", "lora", "lapt"]


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pack = load(GPU / "pack.py", "gpu_pack")
utilisation = load(REPO / "benchmarks" / "utilisation.py", "gpu_utilisation")


def as_on_gpu_env(profile="micro"):
    return {**os.environ, "PYTHONPATH": str(GPU / "as_on_gpu"),
            "CL_ASR_AS_ON_GPU": ",".join(sorted(pack.simulated_allowed(profile)))}


def test_micro_profile_on_the_cpu_end_to_end_with_only_the_gpu_machines_packages(tmp_path):
    env = as_on_gpu_env()
    hidden = subprocess.run([sys.executable, "-c", "import optuna"], env=env, capture_output=True, text=True)
    assert hidden.returncode != 0 and "optuna" in hidden.stderr  # the simulation is on: optuna is not carried
    out = tmp_path / "gpu"
    proc = subprocess.run([sys.executable, str(GPU / "run_gpu.py"), "--profile", "micro", "--device", "cpu",
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "gpu.json").read_text())
    step = data["fft_step"]
    assert 0 < step["utilisation"] < 1 and step["flops_per_step"] > 0 and step["seconds_per_step"] > 0
    assert step["precision"] == "fp32"  # auto on a CPU
    assert list(data["strategies"]) == STRATEGIES
    for name, s in data["strategies"].items():
        assert s["status"] == "complete", (name, s)
        assert s["peak_memory_mb"] > 0 and s["wall_clock_s"] > 0, (name, s)
        assert 0 <= s["avg_error"] <= 2, (name, s)
        assert set(data["final_error"][name]) == {"eo", "ia", "ga", "en", "de", "es"}
    assert data["wall_clock_s"] > data["fft_step_s"] > 0 and not data["run"]["cut_at_deadline"]
    md = (out / "gpu.md").read_text()
    assert "MFU" in md and "| lapt | complete |" in md and "run_suite.py run --scenario languages" in md
    run_dir = out / "languages-micro"
    assert (run_dir / "report.md").exists() and (out / "run.log").exists()
    assert json.loads((run_dir / "run.json").read_text())["config"]["profile_overrides"] == {"precision": "auto"}


def test_parts_round_trip_and_refuse_corruption(tmp_path):
    blob = tmp_path / "blob"
    data = os.urandom(10_000)
    blob.write_bytes(data)
    ranges = pack.layout(len(data), wheel_bytes=1_000, capacity=4_000)
    assert ranges == [(0, 3_000), (3_000, 7_000), (7_000, 10_000)]  # call 1 also carries the wheels
    folders = [tmp_path / f"call{k}" for k in (1, 2, 3)]
    manifest = {"parts": pack.write_parts(blob, ranges, folders), "wheels": [],
                "backbone": {"blob": {"bytes": len(data), "sha256": pack.sha256(data)}}}
    for folder in folders:
        (folder / "manifest.json").write_text(json.dumps(manifest))
    stage = tmp_path / "stage"
    pack.stage(folders[0], stage)
    with pytest.raises(FileNotFoundError, match=r"call\(s\) 2, 3"):
        pack.reassemble(stage, manifest)
    for folder in folders[1:]:
        pack.stage(folder, stage)
    assert pack.reassemble(stage, manifest) == data
    part = stage / "part-02.bin"
    part.write_bytes(b"x" + part.read_bytes()[1:])
    with pytest.raises(ValueError, match="part-02.bin"):
        pack.reassemble(stage, manifest)
    with pytest.raises(ValueError, match="do not fit"):
        pack.layout(10, wheel_bytes=5, capacity=5)


def test_backbone_encoding_rebuilds_the_folder_bit_for_bit(tmp_path):
    from safetensors.torch import save_file

    src = tmp_path / "whisper-base"
    src.mkdir()
    weights = {"b": torch.randn(7, 5).half().float(),  # fp16 values in fp32, as the real backbone's
               "a": torch.tensor([0.0, -0.0, 65504.0, 6e-8]).half().float()}  # signed zero, largest, subnormal
    save_file(weights, str(src / "model.safetensors"), metadata={"format": "pt"})
    (src / "config.json").write_text('{"d_model": 8}')
    (src / "SOURCE.json").write_text('{"source": "test"}')
    desc = pack.encode_backbone(src, tmp_path / "blob")
    files = pack.decode_backbone((tmp_path / "blob").read_bytes(), desc)
    assert files == {p.name: p.read_bytes() for p in src.iterdir()}
    low = next(m for m in desc["members"] if m["name"] == "model.safetensors:low")
    assert low["bytes"] == 7 * 5 + 4  # one byte per weight stored raw, the other one compressed
    save_file({"w": torch.tensor([0.1])}, str(src / "model.safetensors"))  # 0.1 is no fp16 value
    with pytest.raises(ValueError, match="not fp16 values"):
        pack.encode_backbone(src, tmp_path / "blob2")


def test_flop_count_of_a_linear_layer_is_the_closed_form():
    m, k, n = 4, 16, 8
    layer, x = torch.nn.Linear(k, n), torch.randn(m, k, requires_grad=True)
    assert utilisation.count_flops(lambda: layer(x)) == 2 * m * n * k
    # backward: the input's and the weight's gradient, each another m x n x k product
    assert utilisation.count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * m * n * k
    peak = utilisation.matmul_flops_per_second(torch.float32, size=64, repeats=2, warmup=1)
    u = utilisation.utilisation(lambda: layer(x), 2 * m * n * k, peak, repeats=3, warmup=1)
    assert peak > 0 and u["utilisation"] == pytest.approx(u["flops_per_second"] / peak)
    assert u["flops_per_second"] == pytest.approx(2 * m * n * k / u["seconds_per_step"])
