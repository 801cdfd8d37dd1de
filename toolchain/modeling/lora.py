"""LoRA on the backbone (peft) and the trained-run format shared by train, merge and export.

A trained checkpoint directory (written by training, read by merge):
    preset.yaml                 copy of the preset the run used (reload never depends on presets/)
    trained.json                variant, pooling, attention, attn_implementation, lora settings
    adapter/                    peft adapter (adapter_config.json + adapter_model.safetensors)
    pooling/                    head config.json + model.safetensors
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file

from toolchain.errors import ToolchainError
from toolchain.modeling.dropout import use_packed_bits_dropout
from toolchain.modeling.model import EmbeddingModel, build_embedding_model, save_head
from toolchain.modeling.pooling import HeadConfig
from toolchain.modeling.variants import Variant
from toolchain.presets import Preset, load_preset

TRAINED_JSON = "trained.json"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (defaults: the paper's r 16, alpha 32, dropout 0.1, all projections)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))


def apply_lora(model: EmbeddingModel, settings: LoraSettings) -> EmbeddingModel:
    """Wrap the backbone in a peft LoRA model in place; the head stays fully trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), bias="none")
    model.backbone = get_peft_model(model.backbone, config)
    use_packed_bits_dropout(model.backbone)
    for p in model.head.parameters():
        p.requires_grad_(True)
    return model


def save_trained(model: EmbeddingModel, target: Path, preset: Preset, settings: LoraSettings,
                 adapter_state: dict[str, torch.Tensor] | None = None,
                 head_state: dict[str, torch.Tensor] | None = None, extra: dict | None = None) -> None:
    """Write adapter/, pooling/, preset.yaml and trained.json into ``target`` (caller makes it
    atomic). ``adapter_state``/``head_state`` override the live weights (e.g. gathered ZeRO-3)."""
    target = Path(target)
    if adapter_state is not None:
        model.backbone.save_pretrained(target / "adapter", state_dict=adapter_state)
    else:
        model.backbone.save_pretrained(target / "adapter")
    if head_state is not None:
        model.head.load_state_dict(head_state)
    save_head(model.head, target / "pooling")
    if preset.path is None:
        raise ToolchainError(f"preset {preset.name} has no source file to copy")
    shutil.copyfile(preset.path, target / "preset.yaml")
    info = {**model.variant.fields(), "preset": preset.name,
            "lora": asdict(settings), **(extra or {})}
    (target / TRAINED_JSON).write_text(json.dumps(info, indent=2) + "\n")


def load_trained(checkpoint: Path, attn_implementation: str = "sdpa",
                 verify: bool = True) -> tuple[EmbeddingModel, Preset, dict]:
    """Rebuild the trained model (backbone + unmerged LoRA + head) from a checkpoint directory.

    Raises:
        ToolchainError: missing files, or a saved tensor that is empty.
    """
    from peft import PeftModel

    checkpoint = Path(checkpoint)
    for needed in (TRAINED_JSON, "preset.yaml", "adapter/adapter_config.json", "pooling/config.json"):
        if not (checkpoint / needed).is_file():
            raise ToolchainError(f"{checkpoint / needed}: missing (not a trained checkpoint)")
    info = json.loads((checkpoint / TRAINED_JSON).read_text())
    preset = load_preset(checkpoint / "preset.yaml")
    head_fields = json.loads((checkpoint / "pooling/config.json").read_text())
    head_config = HeadConfig.from_dict(head_fields, str(checkpoint / "pooling/config.json"))
    variant = Variant.from_fields(info, str(checkpoint / TRAINED_JSON))
    model = build_embedding_model(preset, variant, attn_implementation=attn_implementation,
                                  verify=verify, head_overrides=_size_fields(head_config))
    model.backbone = PeftModel.from_pretrained(model.backbone, str(checkpoint / "adapter"))
    weights = checkpoint / "pooling/model.safetensors"
    if weights.is_file():
        state = load_file(str(weights))
        check_nonempty(state, str(weights), must_move=lambda name: not name.endswith(".bias"))
        model.head.load_state_dict(state)
    model.eval()
    return model, preset, info


def _size_fields(config: HeadConfig) -> dict:
    return {k: getattr(config, k) for k in ("n_latents", "num_heads", "dim_head", "ff_mult",
                                            "token_input", "layer_summary")}


def check_nonempty(state: dict[str, torch.Tensor], where: str,
                   must_move: Callable[[str], bool] = lambda name: True) -> None:
    """The known peft + ZeRO-3 failure saves empty or all-zero tensors: refuse them.

    Every tensor must be non-empty. All zeros is only an error for tensors training must have
    moved (``must_move(name)``): LoRA B starts at zero, and some head biases legitimately stay
    zero (m2's latent-query path gets no gradient: its softmax runs over a single key)."""
    for name, tensor in state.items():
        if tensor.numel() == 0:
            raise ToolchainError(f"{where}: tensor {name} is empty (ZeRO-3 partition not gathered?)")
        if must_move(name) and not torch.any(tensor != 0):
            raise ToolchainError(f"{where}: tensor {name} is all zeros")
