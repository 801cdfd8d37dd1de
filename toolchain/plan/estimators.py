"""DeepSpeed's own model-state estimators, for comparison with the LoRA-aware plan: they assume
every parameter is trainable (18 bytes each, partitioned), which LoRA is not."""

from __future__ import annotations

from toolchain.plan.settings import PlanSettings


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
