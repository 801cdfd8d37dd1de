"""DeepSpeed configs are data (ds_configs/*.json); every value the run sets is "auto" there.

``resolve_ds_config`` fills each "auto" from the run (one source for batch size, LR, clipping,
precision) and refuses an "auto" it has no value for, so the engine receives exactly the shipped
file with the run's numbers in it. Bucket sizes follow the usual hidden-size rules.
"""

from __future__ import annotations

from pathlib import Path

from toolchain.atomic import read_json
from toolchain.errors import ToolchainError
from toolchain.paths import project_root
from toolchain.train.config import TrainConfig

# (zero_stage, offload) -> shipped file; one registry instead of branches over stages.
DS_CONFIG_FILES: dict[tuple[int, bool], str] = {
    (2, False): "zero2.json",
    (3, False): "zero3.json",
    (3, True): "zero3_offload.json",
}


def ds_config_path(config: TrainConfig) -> Path:
    key = (config.zero_stage, config.offload)
    if key not in DS_CONFIG_FILES:
        raise ToolchainError(f"no DeepSpeed config for ZeRO stage {config.zero_stage} with "
                             f"offload={config.offload}; shipped: {sorted(DS_CONFIG_FILES.values())}")
    return project_root() / "ds_configs" / DS_CONFIG_FILES[key]


def auto_values(config: TrainConfig, *, world_size: int, micro_batch: int, micro_steps: int,
                hidden_size: int, on_gpu: bool) -> dict[str, object]:
    """Dotted config key -> the run's value for it."""
    precision = config.resolved_precision(on_gpu)
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": micro_steps,
        "train_batch_size": micro_batch * micro_steps * world_size,
        "gradient_clipping": config.grad_clip,
        "bf16.enabled": precision == "bf16",
        "optimizer.params.lr": config.lr,
        "optimizer.params.weight_decay": config.weight_decay,
        # torch AdamW on CPU: DeepSpeed's fused/CPU Adam would JIT-compile for minutes.
        "optimizer.params.torch_adam": not on_gpu,
        "zero_force_ds_cpu_optimizer": on_gpu,
        "zero_optimization.offload_optimizer.pin_memory": on_gpu,
        "zero_optimization.reduce_bucket_size": hidden_size * hidden_size,
        "zero_optimization.allgather_bucket_size": hidden_size * hidden_size,
        "zero_optimization.stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "zero_optimization.stage3_param_persistence_threshold": 10 * hidden_size,
    }


def fill_auto(template: dict, values: dict[str, object], where: str) -> dict:
    """Replace every "auto" in ``template`` by ``values[dotted key]``.

    Values for keys the file lacks are ignored (files may omit sections).

    Raises:
        ToolchainError: an "auto" without a value.
    """

    def walk(node, prefix: str):
        if isinstance(node, dict):
            return {k: walk(v, f"{prefix}.{k}" if prefix else k) for k, v in node.items()}
        if node == "auto":
            if prefix not in values:
                raise ToolchainError(f"{where}: {prefix} is \"auto\" but the run sets no value for it")
            return values[prefix]
        return node

    return walk(template, "")


def resolve_ds_config(config: TrainConfig, **kwargs) -> dict:
    """Load the shipped file for the run's ZeRO stage and fill its "auto" values.

    Args:
        config: the run's TrainConfig.
        **kwargs: world_size, micro_batch, micro_steps, hidden_size, on_gpu (see auto_values).
    """
    path = ds_config_path(config)
    template = read_json(path, "DeepSpeed config")
    if template.get("zero_optimization", {}).get("stage") != config.zero_stage:
        raise ToolchainError(f"{path}: zero_optimization.stage is not {config.zero_stage}")
    return fill_auto(template, auto_values(config, **kwargs), str(path))
