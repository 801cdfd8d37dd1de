"""Merge -> ONNX export -> verification: one parity-gated graph per variant and profile.

    export_model_dir(model_dir, ["fp32", "int8"])   # `poolattn export`
    verify_artifact(artifact)                       # `poolattn verify`
    load_profile("int8")                            # export/<name>.yaml
"""

from toolchain.export.pipeline import export_model_dir
from toolchain.export.profiles import load_profile
from toolchain.export.verify import verify_artifact

__all__ = ["export_model_dir", "load_profile", "verify_artifact"]
