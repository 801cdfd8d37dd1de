"""Every training setting as the command line and README see it, derived from TrainConfig's field
metadata (help, optional legacy ``flag``, ``choices``, nested ``fields``, ``preset_only``), so the
flags of ``poolattn train``, its --help and README's settings table have one source.

``python -m toolchain.train.settings`` prints README's table.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, dataclass, fields
from typing import Any

from toolchain.train.config import TrainConfig


@dataclass(frozen=True)
class TrainSetting:
    """One TrainConfig field (or a field of a nested one, e.g. ``lora.r``)."""

    key: str                 # preset key under ``train:``: "warmup_steps", "lora.r"
    flag: str                # "--warmup", "--lora-r"; preset-only settings have one for reference
    kind: type               # int | float | str | bool | list (a list flag is comma-separated)
    help: str
    default: Any
    choices: tuple[str, ...] | None = None
    preset_only: bool = False

    @property
    def name(self) -> str:
        """The Python identifier of the flag (click's parameter name)."""
        return self.flag.lstrip("-").replace("-", "_")


def train_settings() -> list[TrainSetting]:
    """The settings in TrainConfig's field order, nested fields expanded in place."""
    settings = []
    hints = typing.get_type_hints(TrainConfig)
    for field in fields(TrainConfig):
        meta = field.metadata
        if "fields" not in meta:
            settings.append(_setting(field.name, hints[field.name], _default(field), meta))
            continue
        nested = hints[field.name]
        nested_hints = typing.get_type_hints(nested)
        for sub in fields(nested):
            sub_meta = {"flag": f"--{field.name}-{sub.name}".replace("_", "-"), **meta["fields"][sub.name]}
            settings.append(_setting(f"{field.name}.{sub.name}", nested_hints[sub.name], _default(sub),
                                     sub_meta))
    return settings


def overrides_from_flags(values: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig.with_overrides keywords from flag values keyed by ``TrainSetting.name``; None
    (flag not given) keeps the preset's value, nested keys become a partial mapping."""
    overrides: dict[str, Any] = {}
    for setting in train_settings():
        value = values.get(setting.name)
        if value is None or setting.preset_only:
            continue
        if setting.kind is list and isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        parent, _, child = setting.key.partition(".")
        if child:
            overrides.setdefault(parent, {})[child] = value
        else:
            overrides[parent] = value
    return overrides


def settings_markdown() -> str:
    """README's table: flag, preset key, TrainConfig default, meaning."""
    rows = ["| flag | preset key (`train:`) | default | meaning |", "|---|---|---|---|"]
    for s in train_settings():
        flag = "preset only" if s.preset_only else f"`{s.flag}`" + (
            f" / `--no-{s.flag[2:]}`" if s.kind is bool else "")
        meaning = s.help + (f" (one of: {', '.join(s.choices)})" if s.choices else "")
        rows.append(f"| {flag} | `{s.key}` | {_markdown_value(s.default)} | {meaning} |")
    return "\n".join(rows) + "\n"


def _setting(key: str, annotation: Any, default: Any, meta: typing.Mapping) -> TrainSetting:
    flag = meta.get("flag") or "--" + key.replace("_", "-")
    choices = tuple(meta["choices"]) if meta.get("choices") else None
    return TrainSetting(key=key, flag=flag, kind=_kind(annotation), help=meta["help"],
                        default=default, choices=choices, preset_only=bool(meta.get("preset_only")))


def _kind(annotation: Any) -> type:
    """``int | None`` -> int, ``list[str]`` -> list, ``bool`` -> bool."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_origin(annotation) or annotation


def _default(field) -> Any:
    if field.default is not MISSING:
        return field.default
    return field.default_factory() if field.default_factory is not MISSING else None


def _markdown_value(value: Any) -> str:
    """As YAML would spell it (null, false), a list as the flag takes it (comma-separated)."""
    if value is None or isinstance(value, bool):
        text = "null" if value is None else str(value).lower()
    else:
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return f"`{text}`"


if __name__ == "__main__":
    print(settings_markdown(), end="")
