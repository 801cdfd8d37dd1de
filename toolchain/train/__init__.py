"""Training stage: DeepSpeed ZeRO LoRA contrastive training of every variant.

Entry points: ``poolattn train`` (toolchain.cli.train), ``recipe_main`` / ``TrainRecipe`` here,
``python -m toolchain.cli.train_rank`` under torchrun or the deepspeed launcher.
"""

from toolchain.train.config import TrainConfig, config_for_preset
from toolchain.train.recipe import TrainRecipe, recipe_main

__all__ = ["TrainConfig", "TrainRecipe", "config_for_preset", "recipe_main"]
