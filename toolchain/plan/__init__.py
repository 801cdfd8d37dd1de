"""`poolattn plan`: per-GPU memory of a LoRA + pooling-head training run, without weights.

settings: PlanSettings (validated through TrainConfig) and settings_for_preset;
counts: parameters and saved activations per part; memory: the plan, its rows and the sweep;
estimators: DeepSpeed's all-trainable estimators for comparison. The shape comes from
``ModelShape.from_preset``; benchmarks/plan_check/plan_check.py checks the plan against
measured memory.
"""

from toolchain.plan.counts import (ACTIVATION_ELEMENTS, backbone_parameter_count,
                                   head_activation_bytes, layer_activation_elements,
                                   lora_parameter_count)
from toolchain.plan.memory import (CAPACITIES_GB, GIB, USABLE_FRACTION, MemoryPlan,
                                   model_state_bytes, plan_memory, sweep)
from toolchain.plan.settings import DTYPE_BYTES, PlanSettings, settings_for_preset

__all__ = ["ACTIVATION_ELEMENTS", "CAPACITIES_GB", "DTYPE_BYTES", "GIB", "USABLE_FRACTION",
           "MemoryPlan", "PlanSettings", "backbone_parameter_count", "head_activation_bytes",
           "layer_activation_elements", "lora_parameter_count", "model_state_bytes",
           "plan_memory", "settings_for_preset", "sweep"]
