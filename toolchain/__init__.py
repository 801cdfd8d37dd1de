"""poolattn toolchain: decoder LLMs -> embedding models (Tang & Yang 2024 variants)."""

from toolchain.errors import ToolchainError

__all__ = ["Embedder", "ToolchainError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: importing the package must not pull in onnxruntime/torch for the CLI's --help.
    if name == "Embedder":
        from toolchain.embedder import Embedder

        return Embedder
    raise AttributeError(f"module 'toolchain' has no attribute {name!r}")
