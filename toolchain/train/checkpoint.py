"""Checkpoints of a run, written atomically by rank 0 with every rank contributing.

checkpoints/step-<N>/ (and final/, without engine/ and rng/):
    adapter/ pooling/ preset.yaml trained.json   save_trained output (what merge reads)
    engine/          DeepSpeed engine state (optimizer, scheduler, ZeRO partitions) for resume
    rng/rank<R>.safetensors   each rank's torch RNG state (dropout stream)
    state.json       step, data cursor, world size
    manifest.json    sha256 of every file

Under ZeRO-3 the adapter and head are partitioned: they are gathered (all ranks take part) and
checked, since the known peft + ZeRO-3 failure saves empty tensors.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from toolchain.atomic import atomic_dir, read_json, write_manifest
from toolchain.errors import ToolchainError
from toolchain.modeling.lora import LoraSettings, check_nonempty, save_trained
from toolchain.presets import Preset
from toolchain.train.loss import world

STEP_DIR = re.compile(r"^step-(\d+)$")
ENGINE_TAG = "state"


def _broadcast(value):
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def gathered_trainable(model) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Full copies of the LoRA tensors (peft key names) and the head's weights, on every rank.

    Raises:
        ToolchainError: a gathered tensor that is empty, or LoRA-B / head weight all zeros.
    """
    import deepspeed

    lora = {n: p for n, p in model.backbone.named_parameters() if "lora_" in n}
    head = dict(model.head.named_parameters())
    with deepspeed.zero.GatheredParameters(list(lora.values()) + list(head.values()), modifier_rank=None):
        adapter_state = {n: p.detach().float().cpu().clone() for n, p in lora.items()}
        head_state = {n: p.detach().float().cpu().clone() for n, p in head.items()}
    check_nonempty(adapter_state, "adapter", must_move=lambda name: "lora_B" in name)
    check_nonempty(head_state, "pooling head", must_move=lambda name: not name.endswith(".bias"))
    return adapter_state, head_state


def save_run_checkpoint(engine, model, target: Path, preset: Preset, lora: LoraSettings,
                        state: dict, extra: dict, with_engine: bool = True) -> None:
    """Write ``target`` atomically (collective: every rank must call it).

    Args:
        engine: the DeepSpeed engine (its state goes to engine/ when ``with_engine``).
        model: the EmbeddingModel inside the engine.
        state: step, cursor, ... for state.json.
        extra: fields added to trained.json (run config).
    """
    import deepspeed

    rank = world()[0]
    adapter_state, head_state = gathered_trainable(model)
    holder = atomic_dir(Path(target)) if rank == 0 else contextlib.nullcontext(None)
    with holder as tmp:
        tmp = Path(_broadcast(str(tmp) if rank == 0 else None))
        if with_engine:
            # Frozen base weights are rebuilt from the preset; only trainable state is saved.
            engine.save_checkpoint(str(tmp / "engine"), tag=ENGINE_TAG,
                                   exclude_frozen_parameters=True)
            (tmp / "rng").mkdir(exist_ok=True)
            save_file(rng_state(), str(tmp / "rng" / f"rank{rank}.safetensors"))
        _barrier()
        # save_trained loads head_state into the live head; under ZeRO-3 the live parameters
        # are empty partitions, so every rank gathers them (a collective) for rank 0's write.
        with deepspeed.zero.GatheredParameters(list(model.head.parameters()), modifier_rank=None):
            if rank == 0:
                save_trained(model, tmp, preset, lora, adapter_state=adapter_state,
                             head_state=head_state, extra=extra)
                (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
                write_manifest(tmp, {"kind": "trained_checkpoint", "step": state["step"]})
    _barrier()
    reset_zero3_trace(engine)


def reset_zero3_trace(engine) -> None:
    """Make ZeRO-3 re-record its parameter-fetch trace.

    ZeRO-3 prefetches parameters along a module trace recorded from earlier forwards; gathering
    parameters outside a forward (the checkpoint save) after a resume left that trace out of step
    ("tracing error ... expected the next parameters"), so the next forward records it afresh.
    """
    offload = getattr(engine.optimizer, "parameter_offload", None)
    if offload is None:
        return  # ZeRO-2: no parameter partitioning, no trace
    coordinator = offload.get_param_coordinator()
    if not coordinator.is_invalid_trace():
        coordinator._invalidate_trace()


def rng_state() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(checkpoint: Path, rank: int) -> None:
    path = Path(checkpoint) / "rng" / f"rank{rank}.safetensors"
    if not path.is_file():
        raise ToolchainError(f"{path}: missing RNG state (checkpoint from another world size?)")
    state = load_file(str(path))
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete step-<N> directory with the largest N (temp dirs are ignored)."""
    root = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in root.glob("step-*")
             if (m := STEP_DIR.match(p.name)) and (p / "state.json").is_file()]
    return max(found)[1] if found else None


def read_state(checkpoint: Path) -> dict:
    path = Path(checkpoint) / "state.json"
    return read_json(path, "checkpoint state")


def load_engine_state(engine, checkpoint: Path) -> None:
    """Optimizer, scheduler and trainable weights from ``checkpoint/engine`` (our own files)."""
    path, _ = engine.load_checkpoint(str(Path(checkpoint) / "engine"), tag=ENGINE_TAG,
                                     load_module_strict=False, load_optimizer_states=True,
                                     load_lr_scheduler_states=True)
    if path is None:
        raise ToolchainError(f"{checkpoint}/engine: DeepSpeed could not load the engine state")
