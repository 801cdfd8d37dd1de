"""Presets are YAML data files under presets/: backbone source, sequence contract, head size,
and (for later stages) train/export sections that each stage reads itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolchain.errors import ToolchainError
from toolchain.paths import project_root
from toolchain.yamlfile import read_yaml_mapping

BACKBONE_SOURCES = ("config", "hf_dir", "gguf", "asset")
# a config-built backbone takes these from its tokenizer (toolchain.modeling.backbone)
TOKENIZER_CONFIG_FIELDS = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")


@dataclass
class BackboneSpec:
    """Where a backbone comes from.

    source "config": built from ``architecture`` + ``config`` with random weights (seed
    ``init_seed``) and the ``tokenizer`` asset; "hf_dir": a local HF directory ``path``; "gguf": a
    GGUF file ``path``; "asset": a registry asset (e.g. smollm2-135m-instruct).
    """

    source: str
    architecture: str | None = None
    config: dict = field(default_factory=dict)
    tokenizer: str | None = None
    init_seed: int = 0
    path: str | None = None
    asset: str | None = None


@dataclass
class Preset:
    name: str
    backbone: BackboneSpec
    max_length: int = 128
    padding_side: str = "left"
    head_size: str = "compact"
    sections: dict = field(default_factory=dict)  # train/export/... read by their stages
    path: Path | None = None


def preset_dir() -> Path:
    return project_root() / "presets"


def list_presets() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def _require(data: dict, key: str, kind: type, where: str):
    if key not in data:
        raise ToolchainError(f"{where}: missing field {key!r}")
    if not isinstance(data[key], kind):
        raise ToolchainError(f"{where}: field {key!r} must be {kind.__name__}, "
                             f"got {type(data[key]).__name__}")
    return data[key]


def load_preset(name_or_path: str | Path) -> Preset:
    """Load a preset by name (presets/<name>.yaml) or by path.

    Raises:
        ToolchainError: unknown preset, YAML error (with line), or a missing/mistyped field.
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):  # names may contain dots (qwen2-0.5b)
        path = preset_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ToolchainError(f"unknown preset {str(name_or_path)!r}; known: {', '.join(list_presets())}")
    data = read_yaml_mapping(path)
    where = str(path)
    backbone = _require(data, "backbone", dict, where)
    source = _require(backbone, "source", str, f"{where}: backbone")
    if source not in BACKBONE_SOURCES:
        raise ToolchainError(f"{where}: backbone.source {source!r} not one of {BACKBONE_SOURCES}")
    known = set(BackboneSpec.__dataclass_fields__)
    unknown = set(backbone) - known
    if unknown:
        raise ToolchainError(f"{where}: backbone has unknown field(s) {sorted(unknown)}")
    spec = BackboneSpec(**backbone)
    from_tokenizer = sorted(set(spec.config) & set(TOKENIZER_CONFIG_FIELDS))
    if from_tokenizer:
        raise ToolchainError(f"{where}: backbone.config.{from_tokenizer[0]}: set from the "
                             f"tokenizer ({spec.tokenizer}); remove it from the preset")
    top = {"name", "backbone", "max_length", "padding_side", "head_size"}
    return Preset(
        name=str(data.get("name", path.stem)),
        backbone=spec,
        max_length=int(data.get("max_length", 128)),
        padding_side=str(data.get("padding_side", "left")),
        head_size=str(data.get("head_size", "compact")),
        sections={k: v for k, v in data.items() if k not in top},
        path=path,
    )
