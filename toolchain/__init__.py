"""poolattn toolchain: decoder LLMs -> embedding models (Tang & Yang 2024 variants)."""

from toolchain.errors import ToolchainError

__all__ = ["ToolchainError"]
__version__ = "0.1.0"
