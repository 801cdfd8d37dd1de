"""EmbeddingModel = backbone -> pooling head -> L2 normalise, plus save/load as a directory.

On disk (sentence-transformers style, every file hashed in manifest.json):
    manifest.json          format_version, variant, pooling, attention, contract, modules, files
    backbone/              HF config.json (is_causal) + model.safetensors + tokenizer files
    pooling/config.json    HeadConfig
    pooling/model.safetensors   head weights (trainable heads only)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from toolchain.atomic import atomic_dir, read_json, read_manifest, write_manifest
from toolchain.contract import ManifestHeader
from toolchain.errors import ToolchainError
from toolchain.modeling.backbone import attention_of, load_backbone, verify_attention
from toolchain.modeling.pooling import HeadConfig, PoolingHead, build_pooler
from toolchain.modeling.variants import Variant, resolve_variant
from toolchain.presets import BackboneSpec, Preset, load_preset
from toolchain.tokenization import TextTokenizer, check_texts

FORMAT_VERSION = 1


class EmbeddingModel(nn.Module):
    """A decoder backbone, a pooling head and L2 normalisation.

    ``forward(input_ids, attention_mask)`` returns L2-normalised float32 (B, H) embeddings.
    Position ids come from the mask (cumsum - 1), so left and right padding agree.
    """

    def __init__(self, backbone: nn.Module, head: PoolingHead, tokenizer: TextTokenizer,
                 variant: Variant) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.tokenizer = tokenizer
        self.variant = variant

    @property
    def head_config(self) -> HeadConfig:
        return self.head.config

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        """Backbone outputs in the pooling contract's feature dict."""
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        needs_all = self.head.needs_all_layers
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids, output_hidden_states=needs_all)
        features = {"token_embeddings": out.last_hidden_state, "attention_mask": attention_mask}
        if needs_all:
            features["all_layer_embeddings"] = out.hidden_states
        return features

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.head(self.features(input_ids, attention_mask))["sentence_embedding"]
        return F.normalize(pooled.float(), p=2, dim=-1)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Embed texts in batches -> (N, H) float32 on CPU, unit norm."""
        check_texts(texts, self.tokenizer.empty_texts)
        device = next(self.parameters()).device
        chunks = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[start:start + batch_size])
            chunks.append(self(batch["input_ids"].to(device), batch["attention_mask"].to(device)).cpu())
        return torch.cat(chunks)


# HeadConfig fields a preset's `head:` section may set (the rest come from the variant/backbone)
PRESET_HEAD_FIELDS = ("n_latents", "num_heads", "dim_head", "ff_mult", "token_input",
                      "layer_summary", "latent_init_std", "layer_embedding_init_std",
                      "pass_through_gate")


def preset_head_fields(preset: Preset) -> dict:
    """A preset's optional ``head:`` mapping of HeadConfig fields, e.g.
    ``head: {pass_through_gate: true}`` (a gated run under its own preset name).

    Raises:
        ToolchainError: not a mapping, or a field not in PRESET_HEAD_FIELDS (named with the file).
    """
    head = preset.sections.get("head") or {}
    where = f"{preset.path or preset.name}: head"
    if not isinstance(head, dict):
        raise ToolchainError(f"{where}: must be a mapping of head config fields")
    unknown = sorted(set(head) - set(PRESET_HEAD_FIELDS))
    if unknown:
        raise ToolchainError(f"{where}: unknown field(s) {unknown}; known: "
                             f"{', '.join(PRESET_HEAD_FIELDS)}")
    return dict(head)


def build_embedding_model(preset: Preset | str, variant: str | Variant | None = None, *,
                          pooling: str | None = None, attention: str | None = None,
                          head_size: str | None = None, attn_implementation: str = "sdpa",
                          head_overrides: dict | None = None, head_seed: int = 0,
                          verify: bool = True) -> EmbeddingModel:
    """Build a variant on a preset's backbone, with a freshly initialised head.

    Args:
        preset: a Preset or preset name.
        variant: a Variant, a name (m1..m5), or None with explicit ``pooling`` and ``attention``.
        head_size: "compact" or "paper"; default: the preset's.
        attn_implementation: "eager" or "sdpa".
        head_overrides: HeadConfig fields (n_latents, num_heads, ...) on top of the size preset
            and the preset's ``head:`` section.
        head_seed: seed of the head's initialisation.
        verify: probe the backbone's attention mode.
    """
    preset = load_preset(preset) if isinstance(preset, str) else preset
    chosen = resolve_variant(variant, pooling, attention)
    backbone, hf_tokenizer = load_backbone(preset.backbone, chosen.attention, attn_implementation)
    if verify:
        verify_attention(backbone, chosen.attention, where=f"preset {preset.name}")
    config = HeadConfig.from_size(
        head_size or preset.head_size, pooling=chosen.pooling, attention=chosen.attention,
        hidden_size=backbone.config.hidden_size, num_layers=backbone.config.num_hidden_layers,
        **{**preset_head_fields(preset), **(head_overrides or {})})
    torch.manual_seed(head_seed)
    head = build_pooler(config)
    tokenizer = TextTokenizer(hf_tokenizer, preset.max_length, preset.padding_side)
    return EmbeddingModel(backbone, head, tokenizer, chosen)


def manifest_header(model: EmbeddingModel) -> ManifestHeader:
    """The variant and tokenisation contract every artifact of ``model`` records."""
    tok = model.tokenizer
    return ManifestHeader(model.variant, tok.max_length, tok.padding_side, tok.eos_token_id,
                          tok.pad_token_id, model.head_config.hidden_size)


def save_head(head: nn.Module, directory: Path) -> None:
    """pooling/config.json + pooling/model.safetensors (trainable heads only)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(head.config.to_dict(), indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    if state:
        save_file(state, str(directory / "model.safetensors"))


def load_head(directory: Path) -> PoolingHead:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ToolchainError(f"{config_path}: missing head config")
    head = build_pooler(HeadConfig.from_dict(json.loads(config_path.read_text()), str(config_path)))
    weights = directory / "model.safetensors"
    if weights.is_file():
        head.load_state_dict(load_file(str(weights)), strict=True)
    elif any(True for _ in head.parameters()):
        raise ToolchainError(f"{weights}: trainable head without weights")
    return head


def save_embedding_model(model: EmbeddingModel, target: Path, extra: dict | None = None) -> dict:
    """Write the model directory atomically; returns the manifest."""
    with atomic_dir(Path(target)) as tmp:
        model.backbone.save_pretrained(tmp / "backbone", safe_serialization=True)
        model.tokenizer.tokenizer.save_pretrained(tmp / "backbone")
        save_head(model.head, tmp / "pooling")
        fields = {"format_version": FORMAT_VERSION, "kind": "embedding_model",
                  "modules": [{"idx": 0, "name": "backbone", "path": "backbone"},
                              {"idx": 1, "name": "pooling", "path": "pooling"}],
                  **manifest_header(model).to_fields(), **(extra or {})}
        manifest = write_manifest(tmp, fields)
    return manifest


def load_embedding_model(directory: Path | str, attn_implementation: str = "sdpa",
                         verify: bool = True) -> EmbeddingModel:
    """Load a model directory written by :func:`save_embedding_model`.

    Checks every file's sha256, that the saved config's attention mode equals the manifest's and,
    with ``verify``, probes the loaded backbone's behaviour.

    Raises:
        ToolchainError: missing/tampered files or an attention mode mismatch.
    """
    directory = Path(directory)
    header = ManifestHeader.read(read_manifest(directory), directory / "manifest.json")
    expected = header.variant.attention
    config_path = directory / "backbone" / "config.json"
    saved = attention_of(read_json(config_path, "backbone config"))
    if saved != expected:
        raise ToolchainError(f"{config_path}: is_causal says {saved}, manifest says {expected}")
    spec = BackboneSpec(source="hf_dir", path=str(directory / "backbone"))
    backbone, hf_tokenizer = load_backbone(spec, expected, attn_implementation)
    if verify:
        verify_attention(backbone, expected, where=str(directory))
    head = load_head(directory / "pooling")
    if head.config.attention != expected:
        raise ToolchainError(f"{directory}/pooling: head built for {head.config.attention} "
                             f"attention, manifest says {expected}")
    tokenizer = TextTokenizer(hf_tokenizer, header.max_length, header.padding_side)
    return EmbeddingModel(backbone, head, tokenizer, header.variant)
