"""Model core: backbones, pooling heads, variants, the EmbeddingModel and its on-disk format."""

from toolchain.modeling.backbone import load_backbone, verify_attention
from toolchain.modeling.model import (EmbeddingModel, build_embedding_model, load_embedding_model,
                                      save_embedding_model)
from toolchain.modeling.pooling import (HEAD_SIZES, POOLERS, HeadConfig, PoolingHead, head_macs,
                                        register_pooler)
# the plug-in heads register themselves into pooling's registry, which imports none of them
from toolchain.modeling import latent_attention  # noqa: F401  (registers the latent_attention head)
from toolchain.modeling import trainable_heads  # noqa: F401  (last_layer / multi_layer trainable)
from toolchain.modeling.variants import VARIANTS, Variant, resolve_variant

__all__ = ["EmbeddingModel", "HEAD_SIZES", "HeadConfig", "POOLERS", "PoolingHead", "VARIANTS", "Variant",
           "build_embedding_model", "head_macs", "load_backbone", "load_embedding_model",
           "register_pooler", "resolve_variant", "save_embedding_model", "verify_attention"]
