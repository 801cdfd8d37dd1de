"""The contract every stage shares: attention modes, pooling names, the variant triple and the
manifest header that train, merge, export, verify, serve and bench write and read.

One place writes and reads ``variant``, ``pooling``, ``attention`` and the tokenisation contract
(``max_length``, ``padding_side``, ``eos_token_id``, ``pad_token_id``, ``embedding_dim``) of a
manifest, so a misspelt or missing field fails once, naming the file and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path

from toolchain.errors import ToolchainError


class Attention(StrEnum):
    """The backbone's attention mode (a str: compares and serialises as its value)."""

    CAUSAL = "causal"
    BIDIRECTIONAL = "bidirectional"

    @classmethod
    def parse(cls, value: object, where: str = "attention") -> "Attention":
        try:
            return cls(value)
        except ValueError:
            raise ToolchainError(f"{where}: unknown attention {value!r}; known: "
                                 f"{', '.join(cls)}") from None


class Pooling(StrEnum):
    """The built-in pooling heads. The head registry (toolchain.modeling.pooling.POOLERS) is
    keyed by these values; a head registered under another name is still a valid pooling."""

    EOS_LAST = "eos_last"
    MEAN = "mean"
    LAST_LAYER_TRAINABLE = "last_layer_trainable"
    MULTI_LAYER_TRAINABLE = "multi_layer_trainable"
    LATENT_ATTENTION = "latent_attention"


def as_pooling(name: str) -> str:
    """A built-in head's name as its Pooling member; other registered names stay plain str."""
    return Pooling(name) if name in Pooling._value2member_map_ else str(name)


@dataclass(frozen=True)
class Variant:
    """A pooling head x attention mode, named (m1..m5) or an explicit pair."""

    name: str
    pooling: str
    attention: Attention
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention", Attention.parse(self.attention))
        object.__setattr__(self, "pooling", as_pooling(self.pooling))

    def fields(self) -> dict[str, str]:
        """The manifest's ``variant``, ``pooling`` and ``attention`` fields."""
        return {"variant": self.name, "pooling": str(self.pooling),
                "attention": str(self.attention)}

    @classmethod
    def from_fields(cls, data: dict, where: str) -> "Variant":
        """Read the variant triple from a manifest (or trained.json) mapping."""
        for key in ("variant", "pooling", "attention"):
            if not isinstance(data.get(key), str):
                raise ToolchainError(f"{where}: field {key!r} missing or not a string")
        return cls(data["variant"], data["pooling"],
                   Attention.parse(data["attention"], f"{where}: field 'attention'"))


@dataclass(frozen=True)
class ManifestHeader:
    """What a consumer must know to embed with an artifact: which variant, and the
    tokenisation contract its graph or weights were built for."""

    variant: Variant
    max_length: int
    padding_side: str
    eos_token_id: int
    pad_token_id: int
    embedding_dim: int

    def to_fields(self) -> dict:
        return {**self.variant.fields(),
                **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "variant"}}

    @classmethod
    def read(cls, manifest: dict, where: str | Path) -> "ManifestHeader":
        """Parse a manifest's header fields.

        Raises:
            ToolchainError: a field missing or of the wrong type, named with ``where``.
        """
        where = str(where)
        values = {}
        for name, kind in (("max_length", int), ("padding_side", str), ("eos_token_id", int),
                           ("pad_token_id", int), ("embedding_dim", int)):
            value = manifest.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ToolchainError(f"{where}: field {name!r} missing or not {kind.__name__}")
            values[name] = value
        if values["padding_side"] not in ("left", "right"):
            raise ToolchainError(f"{where}: field 'padding_side' must be left or right, "
                                 f"got {values['padding_side']!r}")
        return cls(Variant.from_fields(manifest, where), **values)


def source_model_dir(artifact: Path, manifest: dict, required: bool = True) -> Path | None:
    """The model directory an exported artifact came from.

    Tried in order: the path relative to the artifact (runs stay relocatable), the absolute path
    that manifests written before issue 28 recorded, the sibling ``merged`` directory of the run.

    Raises:
        ToolchainError: none found and ``required``.
    """
    artifact = Path(artifact)
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    candidates = []
    if isinstance(source.get("model_dir_relative"), str):
        candidates.append(artifact / source["model_dir_relative"])
    if isinstance(manifest.get("model_dir"), str):
        candidates.append(Path(manifest["model_dir"]))
    candidates.append(artifact.parent / "merged")
    for candidate in candidates:
        if (candidate / "manifest.json").is_file():
            return candidate
    if required:
        raise ToolchainError(f"{artifact}/manifest.json: source model dir not found "
                             f"({source.get('model_dir_relative')}, {manifest.get('model_dir')}); "
                             "pass --model-dir")
    return None
