"""What a memory plan depends on: PlanSettings, from a preset's ``train:`` section plus CLI flags.

The rules a plan shares with training (ZeRO stage, offload only with ZeRO-3, precision names,
positive sizes, LoRA r/dropout) are TrainConfig's: PlanSettings validates through it and adds
only what a plan alone needs (the GPU count and the batch split over it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolchain.errors import ToolchainError
from toolchain.presets import Preset, load_preset

if TYPE_CHECKING:
    from toolchain.train.config import TrainConfig

DTYPE_BYTES = {"bf16": 2, "fp32": 4}


@dataclass
class PlanSettings:
    """Everything a plan depends on (defaults: the preset's ``train:`` section).

    ``seq_len`` is ``train.max_length``; ``lora_r`` / ``lora_dropout`` are ``train.lora``.
    ``precision`` "auto" resolves as training would on ``device`` (bf16 on a GPU; on a CPU bf16
    only with bf16 units); ``chunk_size`` 0 means None.
    """

    preset: str
    variant: str = "m5"
    head_size: str = "paper"
    gpus: int = 8
    zero_stage: int = 3
    offload: bool = False
    chunk_size: int | None = 8
    seq_len: int = 512
    batch_size: int = 2048  # queries in one contrastive batch, all ranks (train.batch_size)
    negatives_per_query: int = 1
    precision: str = "bf16"
    lora_r: int = 16
    lora_dropout: float = 0.1
    gradient_checkpointing: bool = True
    reduce_bucket: int = 0  # elements; 0 = DeepSpeed "auto" rule (hidden^2), see ds_config
    prefetch_bucket: int = 0
    device: str = "gpu"  # "cpu": ranks are CPU processes (the rehearsal); see plan/cpu_rank.py

    def __post_init__(self) -> None:
        checked = self.as_train_config()
        self.chunk_size = checked.chunk_size
        if self.device not in ("gpu", "cpu"):
            raise ToolchainError(f"plan: device must be gpu or cpu, got {self.device!r}")
        self.precision = checked.resolved_precision(on_gpu=self.device == "gpu")
        if self.gpus < 1:
            raise ToolchainError(f"plan: gpus must be >= 1, got {self.gpus}")
        if self.batch_size % self.gpus:
            raise ToolchainError(f"plan: batch_size {self.batch_size} not divisible by "
                                 f"{self.gpus} GPUs")

    def as_train_config(self) -> TrainConfig:
        """The TrainConfig these settings describe, validated by TrainConfig's own rules.

        Raises:
            ToolchainError: "plan: train.<key>: ..." naming the broken rule.
        """
        from toolchain.train.config import TrainConfig

        values = {"zero_stage": self.zero_stage, "offload": self.offload,
                  "chunk_size": self.chunk_size, "max_length": self.seq_len,
                  "batch_size": self.batch_size, "negatives_per_query": self.negatives_per_query,
                  "precision": self.precision,
                  "gradient_checkpointing": self.gradient_checkpointing,
                  "lora": {"r": self.lora_r, "dropout": self.lora_dropout}}
        try:
            return TrainConfig.from_dict(values, where="plan")
        except ToolchainError as err:
            # the plan's flag is --seq-len, TrainConfig's key max_length: name both
            hint = " (the plan's seq_len, --seq-len)" if "max_length" in str(err) else ""
            raise ToolchainError(f"{err}{hint}") from None


def settings_for_preset(preset: Preset | str, **overrides) -> PlanSettings:
    """PlanSettings from the preset's ``train:`` section and head size, with the non-None
    ``overrides`` (CLI flags) applied. ``grad_accum`` does not enter: each micro-step is a whole
    contrastive batch, so it changes time, not memory."""
    from toolchain.train.config import config_for_preset

    preset = load_preset(preset) if isinstance(preset, str) else preset
    cfg = config_for_preset(preset)
    values = dict(preset=preset.name, head_size=preset.head_size, zero_stage=cfg.zero_stage,
                  offload=cfg.offload, chunk_size=cfg.chunk_size, seq_len=cfg.max_length,
                  batch_size=cfg.batch_size, negatives_per_query=cfg.negatives_per_query,
                  precision=cfg.precision, lora_r=cfg.lora.r, lora_dropout=cfg.lora.dropout,
                  gradient_checkpointing=cfg.gradient_checkpointing)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PlanSettings(**values)
