"""Per-GPU memory plan of a LoRA + pooling-head training run (`poolattn plan`), no weights.

Model states (bytes per parameter, bf16 mixed precision with AdamW, as DeepSpeed keeps them):
    parameters   2 (bf16 copy) for the frozen base, the LoRA adapters and the head;
                 ZeRO-3 partitions all of them over the GPUs, plus the gathered parameters it
                 keeps live (up to stage3_max_live_parameters of the shipped config)
    gradients    2 (bf16) + 4 (fp32 partition), trainable parameters only, partitioned (ZeRO 2/3)
    optimizer    4 (fp32 master) + 8 (Adam moments), trainable only, partitioned; --offload moves
                 the fp32 gradient, master and moments to CPU
DeepSpeed's own estimators assume every parameter is trainable (18 bytes each, partitioned);
with LoRA only the adapters (~0.6 % of a 7B backbone) and the head train: that is the difference.

Activations of one GradCache chunk: toolchain.plan.counts.ACTIVATION_ELEMENTS (saved tensors
per token per decoder layer, measured) for the backbone; the head's saved tensors are counted
exactly by running the real head on the meta device; plus the GradCache embedding cache for the
whole batch and the logits. benchmarks/plan_check/plan_check.py compares the result with
measured memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from toolchain.errors import ToolchainError
from toolchain.modeling.pooling import HeadConfig
from toolchain.modeling.shapes import ModelShape
from toolchain.modeling.variants import resolve_variant
from toolchain.plan.counts import (backbone_parameter_count, head_saved_bytes,
                                   largest_module_parameters, layer_activation_elements,
                                   lora_parameter_count, meta_head)
from toolchain.plan.estimators import deepspeed_estimates
from toolchain.plan.settings import DTYPE_BYTES, PlanSettings, settings_for_preset
from toolchain.presets import Preset, load_preset

GIB = 2**30
CAPACITIES_GB = (80, 40, 24)
# Fraction of a card the plan may fill: the rest is CUDA context (~0.5-1 GB), kernels'
# workspaces and allocator fragmentation, none of which the model sees.
USABLE_FRACTION = 0.9


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


def _buckets(settings: PlanSettings, hidden: int) -> tuple[int, int]:
    """(reduce, prefetch-or-allgather) bucket elements: explicit, else the trainer's "auto" rule."""
    from toolchain.train.ds_config import auto_values

    auto = auto_values(settings.as_train_config(), world_size=1, micro_batch=1, micro_steps=1,
                       hidden_size=hidden, on_gpu=True)
    other = ("zero_optimization.stage3_prefetch_bucket_size" if settings.zero_stage == 3
             else "zero_optimization.allgather_bucket_size")
    return (settings.reduce_bucket or int(auto["zero_optimization.reduce_bucket_size"]),
            settings.prefetch_bucket or int(auto[other]))


def max_live_parameters(settings: PlanSettings) -> int:
    """``stage3_max_live_parameters`` of the shipped DeepSpeed config the run would use."""
    from toolchain.atomic import read_json
    from toolchain.train.ds_config import ds_config_path

    config = read_json(ds_config_path(settings.as_train_config()), "DeepSpeed config")
    return int(config.get("zero_optimization", {}).get("stage3_max_live_parameters", 1e9))


def _row(kind: str, component: str, no_ckpt: float, ckpt: float | None = None,
         cpu: float = 0) -> dict:
    return {"kind": kind, "component": component, "gpu_no_ckpt": int(no_ckpt),
            "gpu_ckpt": int(no_ckpt if ckpt is None else ckpt), "cpu": int(cpu)}


def _state_rows(s: PlanSettings, counts: dict, pb: int, hidden: int, head: str) -> list[dict]:
    """Parameters, gradients, optimizer state and ZeRO buffers per GPU."""
    shard = s.gpus if s.zero_stage == 3 else 1  # ZeRO-3 partitions frozen weights too
    trainable = counts["trainable"]
    master = 4  # DeepSpeed's ZeRO optimizers clone the trainable partition to fp32 even in fp32
    on_gpu = 0 if s.offload else 1
    reduce_bucket, other_bucket = _buckets(s, hidden)
    other = "prefetch" if s.zero_stage == 3 else "allgather"
    return [
        _row("state", f"params: frozen base ({s.precision})", counts["base"] * pb / shard),
        _row("state", f"params: LoRA r{s.lora_r}", counts["lora"] * pb / shard),
        _row("state", f"params: head ({head})", counts["head"] * pb / shard),
        # gathered parameters stay resident up to stage3_max_live_parameters while they will be
        # reused soon (GradCache re-forwards, checkpoint recomputes): below that, the whole model
        _row("state", "ZeRO-3 live gathered params (max_live)",
             pb * min(counts["total"], max_live_parameters(s)) if s.zero_stage == 3 else 0),
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
        shape: architecture dimensions (see ``ModelShape.from_preset``).
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
    shape = ModelShape.from_preset(preset)
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
