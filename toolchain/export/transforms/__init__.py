"""Profile transforms of the exported fp32 graph (fp32 as is, int8, fp16).

The registry (registry.py) imports no transform; importing this package imports each transform
module, which registers itself (peft's pattern: register_* plus the package that imports the
plug-ins). A new transform: a module here with ``@register_transform(precision, quantization)``,
imported below.
"""

from toolchain.export.transforms.registry import (TRANSFORMS, apply_profile, needs_calibration,
                                                  register_transform, registered_pairs)
# the plug-ins: each registers its transforms on import (stock first: fp32 is the first precision)
from toolchain.export.transforms import stock, rowwise  # noqa: F401,I001

__all__ = ["TRANSFORMS", "apply_profile", "needs_calibration", "register_transform",
           "registered_pairs"]
