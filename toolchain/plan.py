"""Per-GPU memory plan of a LoRA + pooling-head training run (`poolattn plan`), without weights.

Model states (bytes per parameter, bf16 mixed precision with AdamW, as DeepSpeed keeps them):
    parameters   2 (bf16 copy) for the frozen base, the LoRA adapters and the head;
                 ZeRO-3 partitions all of them over the GPUs, plus the live gathered layer
    gradients    2 (bf16) + 4 (fp32 partition), trainable parameters only, partitioned (ZeRO 2/3)
    optimizer    4 (fp32 master) + 8 (Adam moments), trainable only, partitioned; --offload moves
                 the fp32 gradient, master and moments to CPU
DeepSpeed's own estimators assume every parameter is trainable (18 bytes each, partitioned);
with LoRA only the adapters (~0.6 % of a 7B backbone) and the head train: that is the difference.

Activations of one GradCache chunk: toolchain.plan_counts.ACTIVATION_ELEMENTS (saved tensors
per token per decoder layer, measured) for the backbone; the head's saved tensors are counted
exactly by running the real head on the meta device; plus the GradCache embedding cache for the
whole batch and the logits. toolchain.plan_check compares the result with measured memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from toolchain.errors import ToolchainError
from toolchain.modeling.pooling import HeadConfig
from toolchain.modeling.shapes import ModelShape
from toolchain.modeling.variants import resolve_variant
from toolchain.plan_counts import (ACTIVATION_ELEMENTS, backbone_parameter_count,
                                   head_activation_bytes, head_saved_bytes,
                                   largest_module_parameters, layer_activation_elements,
                                   lora_parameter_count, meta_head, shape_of)
from toolchain.presets import Preset, load_preset

__all__ = ["ACTIVATION_ELEMENTS", "MemoryPlan", "PlanSettings", "backbone_parameter_count",
           "head_activation_bytes", "layer_activation_elements", "model_state_bytes",
           "plan_memory", "settings_for_preset", "shape_of"]

GIB = 2**30
DTYPE_BYTES = {"bf16": 2, "fp32": 4}
CAPACITIES_GB = (80, 40, 24)
# Fraction of a card the plan may fill: the rest is CUDA context (~0.5-1 GB), kernels'
# workspaces and allocator fragmentation, none of which the model sees.
USABLE_FRACTION = 0.9


@dataclass
class PlanSettings:
    """Everything a plan depends on (defaults: the preset's ``train:`` section)."""

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

    def __post_init__(self) -> None:
        if self.gpus < 1 or self.batch_size < 1 or self.seq_len < 1:
            raise ToolchainError("plan: gpus, batch_size and seq_len must be >= 1")
        if self.zero_stage not in (2, 3):
            raise ToolchainError(f"plan: --zero must be 2 or 3, got {self.zero_stage}")
        if self.offload and self.zero_stage != 3:
            raise ToolchainError("plan: --offload ships only with ZeRO-3 "
                                 "(ds_configs/zero3_offload.json)")
        if self.precision not in DTYPE_BYTES:
            raise ToolchainError(f"plan: precision must be one of {sorted(DTYPE_BYTES)}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ToolchainError("plan: --chunk-size must be >= 1")
        if self.batch_size % self.gpus:
            raise ToolchainError(f"plan: batch_size {self.batch_size} not divisible by "
                                 f"{self.gpus} GPUs")


@dataclass
class MemoryPlan:
    settings: PlanSettings
    shape: ModelShape
    counts: dict[str, int]  # parameters: base, lora, head, trainable, total, largest_module
    texts: dict[str, int]  # per step: global, local, chunk
    rows: list[dict] = field(default_factory=list)  # component, gpu_no_ckpt, gpu_ckpt, cpu
    deepspeed: dict = field(default_factory=dict)

    def total(self, checkpointing: bool) -> int:
        return sum(r["gpu_ckpt" if checkpointing else "gpu_no_ckpt"] for r in self.rows)

    def verdicts(self) -> dict[str, dict[int, bool]]:
        """{"checkpointing"/"no_checkpointing": {80: fits, 40: fits, 24: fits}}."""
        return {("checkpointing" if ckpt else "no_checkpointing"):
                {gb: self.total(ckpt) <= USABLE_FRACTION * gb * 1e9 for gb in CAPACITIES_GB}
                for ckpt in (False, True)}

    def to_dict(self) -> dict:
        return {"settings": asdict(self.settings), "shape": asdict(self.shape),
                "counts": self.counts, "texts": self.texts, "rows": self.rows,
                "totals": {"no_checkpointing": self.total(False),
                           "checkpointing": self.total(True)},
                "usable_fraction": USABLE_FRACTION,
                "verdicts": {k: {str(g): v for g, v in d.items()}
                             for k, d in self.verdicts().items()},
                "deepspeed_estimators": self.deepspeed}


def settings_for_preset(preset: Preset | str, **overrides) -> PlanSettings:
    """PlanSettings from the preset's ``train:`` section (precision "auto" = bf16 on GPU) and
    head size, with the non-None ``overrides`` (CLI flags) applied. ``grad_accum`` does not
    enter: each micro-step is a whole contrastive batch, so it changes time, not memory."""
    from toolchain.train.config import config_for_preset

    preset = load_preset(preset) if isinstance(preset, str) else preset
    cfg = config_for_preset(preset)
    values = dict(preset=preset.name, head_size=preset.head_size, zero_stage=cfg.zero_stage,
                  offload=cfg.offload, chunk_size=cfg.chunk_size, seq_len=cfg.max_length,
                  batch_size=cfg.batch_size, negatives_per_query=cfg.negatives_per_query,
                  precision=cfg.resolved_precision(on_gpu=True), lora_r=cfg.lora.r,
                  lora_dropout=cfg.lora.dropout, gradient_checkpointing=cfg.gradient_checkpointing)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PlanSettings(**values)


def _buckets(settings: PlanSettings, hidden: int) -> tuple[int, int]:
    """(reduce, prefetch-or-allgather) bucket elements: explicit, else the trainer's "auto" rule."""
    from toolchain.train.config import TrainConfig
    from toolchain.train.ds_config import auto_values

    auto = auto_values(TrainConfig(), world_size=1, micro_batch=1, micro_steps=1,
                       hidden_size=hidden, on_gpu=True)
    other = ("zero_optimization.stage3_prefetch_bucket_size" if settings.zero_stage == 3
             else "zero_optimization.allgather_bucket_size")
    return (settings.reduce_bucket or int(auto["zero_optimization.reduce_bucket_size"]),
            settings.prefetch_bucket or int(auto[other]))


def _quiet_deepspeed_import() -> None:
    """Import deepspeed without its accelerator-detection banner on stdout (it would corrupt
    ``--json`` output); handlers created during the import then write to stdout as usual."""
    import contextlib
    import io
    import sys

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        import deepspeed.runtime.zero.stage3  # noqa: F401
        import deepspeed.runtime.zero.stage_1_and_2  # noqa: F401
    from deepspeed.utils.logging import logger

    for handler in logger.handlers:
        if getattr(handler, "stream", None) is buffer:
            handler.setStream(sys.__stdout__)


def deepspeed_estimates(total: int, largest: int, settings: PlanSettings) -> dict:
    """GPU/CPU bytes from DeepSpeed's estimators (the functions that the ``*_all_cold`` tables
    print row by row); they assume every parameter is trainable."""
    _quiet_deepspeed_import()
    nodes = max(1, -(-settings.gpus // 8))
    per_node = settings.gpus // nodes
    if settings.zero_stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            total_params=total, largest_layer_params=largest, num_gpus_per_node=per_node,
            num_nodes=nodes, cpu_offload=settings.offload, cpu_offload_params=False, zero_init=True)
        name = "deepspeed.runtime.zero.stage3.estimate_zero3_model_states_mem_needs(_all_cold)"
    else:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        cpu, gpu = estimate_zero2_model_states_mem_needs(
            total_params=total, num_gpus_per_node=per_node, num_nodes=nodes,
            cpu_offload=settings.offload)
        name = ("deepspeed.runtime.zero.stage_1_and_2."
                "estimate_zero2_model_states_mem_needs(_all_cold)")
    return {"function": name, "total_params": total, "largest_layer_params": largest,
            "gpu_bytes": int(gpu), "cpu_bytes_per_node": int(cpu),
            "assumes": "all params trainable"}


def _row(kind: str, component: str, no_ckpt: float, ckpt: float | None = None,
         cpu: float = 0) -> dict:
    return {"kind": kind, "component": component, "gpu_no_ckpt": int(no_ckpt),
            "gpu_ckpt": int(no_ckpt if ckpt is None else ckpt), "cpu": int(cpu)}


def _state_rows(s: PlanSettings, counts: dict, pb: int, hidden: int, head: str) -> list[dict]:
    """Parameters, gradients, optimizer state and ZeRO buffers per GPU."""
    shard = s.gpus if s.zero_stage == 3 else 1  # ZeRO-3 partitions frozen weights too
    trainable = counts["trainable"]
    master = 4 if pb != 4 else 0  # the fp32 master copy exists only under mixed precision
    on_gpu = 0 if s.offload else 1
    reduce_bucket, other_bucket = _buckets(s, hidden)
    other = "prefetch" if s.zero_stage == 3 else "allgather"
    return [
        _row("state", f"params: frozen base ({s.precision})", counts["base"] * pb / shard),
        _row("state", f"params: LoRA r{s.lora_r}", counts["lora"] * pb / shard),
        _row("state", f"params: head ({head})", counts["head"] * pb / shard),
        _row("state", "ZeRO-3 live gathered module (4 B x largest)",
             4 * counts["largest_module"] if s.zero_stage == 3 else 0),
        _row("state", f"grads: {s.precision}, trainable, partitioned", trainable * pb / s.gpus),
        _row("state", "grads: fp32 partition", on_gpu * trainable * master / s.gpus,
             cpu=(1 - on_gpu) * trainable * master / s.gpus),
        _row("state", "optimizer: fp32 master + Adam m, v",
             on_gpu * trainable * (master + 8) / s.gpus,
             cpu=(1 - on_gpu) * trainable * (master + 8) / s.gpus),
        _row("buffer", f"comm buckets (reduce + {other})",
             pb * (min(reduce_bucket, trainable) + min(other_bucket, counts["total"]))),
    ]


def _activation_rows(s: PlanSettings, shape: ModelShape, head_cfg: HeadConfig, pb: int,
                     texts: dict) -> list[dict]:
    """Activations of one chunk (with / without checkpointing), GradCache cache and loss."""
    h, L, chunk, tokens = shape.hidden_size, shape.num_layers, texts["chunk"], s.seq_len
    dtype = torch.bfloat16 if s.precision == "bf16" else torch.float32
    layer = chunk * tokens * pb * layer_activation_elements(shape, s.precision, s.lora_r,
                                                            s.lora_dropout, tokens)
    head_saved = head_saved_bytes(head_cfg, chunk, tokens, dtype)
    local_queries = s.batch_size // s.gpus
    docs = s.batch_size * (1 + s.negatives_per_query)  # candidates gathered from all ranks
    return [
        # checkpointing keeps each layer's input (L + 1 hidden states) and recomputes one layer
        _row("activation", f"acts: decoder layers, chunk {chunk} x {tokens} tok", L * layer,
             chunk * tokens * (L + 1) * h * pb + layer),
        _row("activation", "acts: decoder backward working set (1 layer)", layer),
        _row("activation", "acts: final norm", chunk * tokens * 2 * h * pb),
        _row("activation", "acts: head", sum(head_saved)),
        # Backward through the head allocates the gradient of its largest intermediate while
        # most saved tensors are still alive (the paper head's (B, n, 65536) tensors).
        _row("activation", "acts: head backward working set", max(head_saved, default=0)),
        _row("activation", "GradCache: fp32 embeddings + grads, local batch",
             2 * 4 * texts["local"] * h if s.chunk_size else 0),
        _row("activation", "loss: gathered candidates + logits (fp32)",
             2 * 4 * docs * h + 3 * 4 * local_queries * docs),
    ]


def plan_memory(settings: PlanSettings, shape: ModelShape,
                with_deepspeed: bool = True) -> MemoryPlan:
    """Per-GPU bytes of every memory component, with and without gradient checkpointing.

    Args:
        settings: run settings (see :func:`settings_for_preset`).
        shape: architecture dimensions (see :func:`shape_of`).
        with_deepspeed: also run DeepSpeed's estimator (imports deepspeed, ~3 s).
    """
    s, pb = settings, DTYPE_BYTES[settings.precision]
    h, L = shape.hidden_size, shape.num_layers
    variant = resolve_variant(s.variant)
    head_cfg = HeadConfig.from_size(s.head_size, pooling=variant.pooling,
                                    attention=variant.attention, hidden_size=h, num_layers=L)
    head = meta_head(head_cfg, torch.float32)
    counts = {"base": backbone_parameter_count(shape),
              "lora": lora_parameter_count(shape, s.lora_r),
              "head": sum(p.numel() for p in head.parameters())}
    counts["trainable"] = counts["lora"] + counts["head"]
    counts["total"] = counts["base"] + counts["trainable"]
    counts["largest_module"] = max(shape.vocab_size * h, h * shape.intermediate_size,
                                   largest_module_parameters(head))
    per_query = 2 + s.negatives_per_query  # query, positive, hard negatives
    local = s.batch_size // s.gpus * per_query
    texts = {"global": s.batch_size * per_query, "local": local,
             "chunk": min(s.chunk_size or local, local)}
    rows = (_state_rows(s, counts, pb, h, f"{s.head_size}, {variant.name}")
            + _activation_rows(s, shape, head_cfg, pb, texts))
    plan = MemoryPlan(settings=s, shape=shape, counts=counts, texts=texts, rows=rows)
    if with_deepspeed:
        plan.deepspeed = deepspeed_estimates(counts["total"], counts["largest_module"], s)
        plan.deepspeed["lora_aware_model_states_bytes"] = model_state_bytes(plan)
    return plan


def model_state_bytes(plan: MemoryPlan) -> int:
    """Parameters + gradients + optimizer state on the GPU (what DeepSpeed's estimators cover)."""
    return sum(r["gpu_no_ckpt"] for r in plan.rows if r["kind"] == "state")


SWEEP_LAYOUTS = ((2, False), (3, False), (3, True))  # (ZeRO stage, optimizer offload)


def sweep(preset: Preset | str, gpus: tuple[int, ...] = (1, 2, 4, 8), **overrides) -> list[dict]:
    """Totals and verdicts of the preset's run over GPU counts and ZeRO layouts (one row each);
    ``overrides`` as for :func:`settings_for_preset`. Layouts whose batch does not split evenly
    over the GPUs are skipped."""
    preset = load_preset(preset) if isinstance(preset, str) else preset
    shape = shape_of(preset)
    rows = []
    for n in gpus:
        for stage, offload in SWEEP_LAYOUTS:
            try:
                settings = settings_for_preset(preset, **{**overrides, "gpus": n,
                                                          "zero_stage": stage, "offload": offload})
            except ToolchainError:
                continue
            plan = plan_memory(settings, shape, with_deepspeed=False)
            rows.append({"gpus": n, "zero_stage": stage, "offload": offload,
                         "head_size": settings.head_size, "chunk": plan.texts["chunk"],
                         "model_states": model_state_bytes(plan),
                         "total_no_ckpt": plan.total(False), "total_ckpt": plan.total(True),
                         "verdicts": plan.verdicts()})
    return rows
