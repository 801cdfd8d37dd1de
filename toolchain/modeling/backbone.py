"""Decoder backbones (Mistral, Qwen2, Llama) as base models with a chosen attention mode.

The attention mode goes through ``config.is_causal`` (persisted in config.json). Setting only each
attention module's flag is silently wrong in transformers 5 (eager stays causal), so the mode is
always verified with a causality probe instead of assumed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import (AutoConfig, AutoModel, AutoTokenizer, LlamaConfig, LlamaModel,
                          MistralConfig, MistralModel, Qwen2Config, Qwen2Model)

from toolchain.assets import fetch_asset
from toolchain.contract import Attention
from toolchain.errors import ToolchainError
from toolchain.presets import BackboneSpec

ARCHITECTURES: dict[str, tuple[type, type]] = {
    "mistral": (MistralConfig, MistralModel),
    "qwen2": (Qwen2Config, Qwen2Model),
    "llama": (LlamaConfig, LlamaModel),
}
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")
# A causal model's first token does not move at all (bit-equal rows); bidirectional moves ~0.1-1.
CAUSAL_TOLERANCE = 1e-5


def attention_of(config) -> Attention:
    """The attention mode a HF config object (or its config.json dict) declares."""
    causal = (config.get("is_causal", True) if isinstance(config, dict)
              else getattr(config, "is_causal", True))
    return Attention.CAUSAL if causal else Attention.BIDIRECTIONAL


def _load_tokenizer(ref: str):
    path = Path(ref)
    directory = path if path.is_dir() else fetch_asset(ref)
    return AutoTokenizer.from_pretrained(str(directory))


def load_saved_tokenizer(path: Path):
    """Load a saved tokenizer with the class its tokenizer_config.json names.

    AutoTokenizer lets a config.json beside it override that class (transformers 5 forces
    Qwen2Tokenizer for model_type qwen2, which splits whitespace differently from the saved
    tokenizer.json), so a saved model dir would tokenise unlike the model that was saved.
    """
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    config = Path(path) / "tokenizer_config.json"
    declared = json.loads(config.read_text()).get("tokenizer_class") if config.is_file() else None
    cls = tokenizer_class_from_name(declared) if declared else None
    return (cls or AutoTokenizer).from_pretrained(str(path))


def _check_hf_dir(path: Path) -> None:
    if not path.is_dir():
        raise ToolchainError(f"{path}: model directory does not exist")
    if not (path / "config.json").is_file():
        raise ToolchainError(f"{path}: not a model directory (no config.json)")


def load_backbone(spec: BackboneSpec, attention: str = Attention.CAUSAL,
                  attn_implementation: str = "sdpa") -> tuple[nn.Module, object]:
    """Build or load a base decoder (no LM head) and its tokenizer, fp32, in ``attention`` mode.

    Raises:
        ToolchainError: unknown architecture/attention/implementation, missing directory or config.
    """
    attention = Attention.parse(attention)
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ToolchainError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}")
    is_causal = attention == Attention.CAUSAL
    if spec.source == "config":
        if spec.architecture not in ARCHITECTURES:
            raise ToolchainError(f"unknown architecture {spec.architecture!r}; "
                                 f"known: {', '.join(ARCHITECTURES)}")
        if not spec.tokenizer:
            raise ToolchainError("backbone.source config needs a tokenizer")
        tokenizer = _load_tokenizer(spec.tokenizer)
        config_cls, model_cls = ARCHITECTURES[spec.architecture]
        config = config_cls(**spec.config, vocab_size=len(tokenizer),
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
        config.is_causal = is_causal
        config._attn_implementation = attn_implementation
        torch.manual_seed(spec.init_seed)
        model = model_cls(config)
    else:
        if spec.source == "asset":
            path = fetch_asset(spec.asset or "")
        elif spec.source == "gguf":
            path = Path(spec.path or "").expanduser()  # presets may say ~/models/...
            if not path.is_file():
                raise ToolchainError(f"{path}: GGUF file does not exist")
            return _load_gguf(path, is_causal, attn_implementation)
        else:
            path = Path(spec.path or "").expanduser()  # presets may say ~/models/...
        _check_hf_dir(path)
        tokenizer = load_saved_tokenizer(path)
        # is_causal is not a default config attribute: set it on the config object itself
        # (a from_pretrained kwarg would reach the model constructor instead).
        config = AutoConfig.from_pretrained(str(path))
        config.is_causal = is_causal
        model = AutoModel.from_pretrained(str(path), config=config, dtype=torch.float32,
                                          attn_implementation=attn_implementation)
    model.eval()
    return model, tokenizer


def _load_gguf(path: Path, is_causal: bool, attn_implementation: str):
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    config.is_causal = is_causal
    model = AutoModel.from_pretrained(str(path.parent), gguf_file=path.name, config=config,
                                      dtype=torch.float32, attn_implementation=attn_implementation)
    return model.eval(), tokenizer


@torch.no_grad()
def causality_delta(model: nn.Module, vocab_size: int, pad_left: int = 0, seed: int = 0) -> float:
    """How far the first real token's last-layer state moves when the last token changes.

    0 under causal attention, clearly > 0 under bidirectional. ``pad_left`` prepends padding.
    """
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (1, 8), generator=gen)
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1 - 3) % (vocab_size - 3) + 3
    batch = torch.cat([ids, changed])
    pad = torch.zeros((2, pad_left), dtype=batch.dtype)
    batch = torch.cat([pad, batch], dim=1)
    mask = torch.cat([torch.zeros_like(pad), torch.ones_like(ids).expand(2, -1)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    param = next(model.parameters())
    out = model(input_ids=batch.to(param.device), attention_mask=mask.to(param.device),
                position_ids=positions.to(param.device)).last_hidden_state.float()
    return (out[0, pad_left] - out[1, pad_left]).abs().max().item()


def verify_attention(model: nn.Module, expected: str, where: str = "model") -> None:
    """Check the config flag and probe the model; raise if the mode is not ``expected``.

    Raises:
        ToolchainError: config or behaviour disagrees with ``expected``.
    """
    declared = attention_of(model.config)
    if declared != expected:
        raise ToolchainError(f"{where}: config says {declared} attention, expected {expected}")
    for pad_left in (0, 3):
        delta = causality_delta(model, model.config.vocab_size, pad_left=pad_left)
        observed = Attention.CAUSAL if delta < CAUSAL_TOLERANCE else Attention.BIDIRECTIONAL
        if observed != expected:
            raise ToolchainError(f"{where}: behaves {observed} (first-token shift {delta:.3g}, "
                                 f"pad {pad_left}) but should be {expected}")
