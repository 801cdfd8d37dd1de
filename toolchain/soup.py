"""`poolattn soup`: one model from the uniform weight average of merged models ("model soups",
Wortsman et al. 2022).

The ingredients must come from training runs that share their initialisation (the same
``seed``: head init and LoRA init) and differ only in data order and dropout (``data_seed``):
short fine-tunes from one start stay in one basin, where the average of the weights embeds like
the average model, with less of one run's chance than any single run. The result is an ordinary
merged model directory (same shape, same latency), written atomically, whose manifest lists the
ingredients with the sha256 of each manifest.
"""

from __future__ import annotations

from pathlib import Path

import torch

from toolchain.atomic import MANIFEST, read_manifest, sha256_file
from toolchain.contract import ManifestHeader
from toolchain.errors import ToolchainError
from toolchain.modeling.model import load_embedding_model, save_embedding_model

SAME_FIELDS = ("variant", "pooling", "attention", "max_length", "embedding_dim", "padding_side")


def _ingredient(directory: Path) -> dict:
    manifest = read_manifest(directory, verify=False)  # files are hashed once, on loading
    where = directory / MANIFEST
    ManifestHeader.read(manifest, where)
    merge = manifest.get("merge")
    if not isinstance(merge, dict) or merge.get("init_seed") is None:
        raise ToolchainError(f"{where}: merge.init_seed: missing; a soup takes models merged "
                             f"from training runs (`poolattn merge` of a run)")
    return {"dir": str(directory), "manifest_sha256": sha256_file(where),
            "init_seed": merge["init_seed"], "data_seed": merge.get("data_seed"),
            "source_run": merge.get("source_run"), "lora_scale": merge.get("lora_scale", 1.0),
            "preset": merge.get("preset"),
            "fields": {k: manifest.get(k) for k in SAME_FIELDS}}


def check_ingredients(model_dirs: list[Path]) -> list[dict]:
    """Read and cross-check the ingredients' manifests; raises naming the file and field."""
    if len(model_dirs) < 2:
        raise ToolchainError(f"a soup needs at least 2 merged models, got {len(model_dirs)}")
    items = [_ingredient(Path(d)) for d in model_dirs]
    first = items[0]
    for item in items[1:]:
        where = Path(item["dir"]) / MANIFEST
        for name in SAME_FIELDS:
            if item["fields"][name] != first["fields"][name]:
                raise ToolchainError(f"{where}: {name} {item['fields'][name]!r} differs from "
                                     f"{first['dir']}'s {first['fields'][name]!r}")
        for name in ("preset", "init_seed", "lora_scale"):
            if item[name] != first[name]:
                raise ToolchainError(f"{where}: merge.{name} {item[name]!r} differs from "
                                     f"{first['dir']}'s {first[name]!r} (a soup averages runs "
                                     f"from one initialisation, merged alike)")
    seen = [(i["data_seed"] if i["data_seed"] is not None else i["init_seed"]) for i in items]
    if len(set(seen)) < len(seen):
        raise ToolchainError(f"soup ingredients repeat a data seed ({seen}): the same run twice")
    return items


def soup_models(model_dirs: list[str | Path], out: str | Path, log=print) -> dict:
    """Average the weights of merged models into OUT; returns the written manifest.

    Raises:
        ToolchainError: fewer than 2 models, a changed file, or ingredients of another variant,
            shape, initialisation or LoRA scale (nothing is written).
    """
    items = check_ingredients([Path(d) for d in model_dirs])
    models = [load_embedding_model(i["dir"]) for i in items]
    states = [m.state_dict() for m in models]
    soup = models[0]
    averaged = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            averaged[key] = torch.stack([s[key].float() for s in states]).mean(0).to(value.dtype)
        elif all(torch.equal(s[key], value) for s in states):
            averaged[key] = value
        else:
            raise ToolchainError(f"{items[1]['dir']}: non-float tensor {key} differs; not a soup")
    soup.load_state_dict(averaged)
    record = [{k: i[k] for k in ("dir", "manifest_sha256", "init_seed", "data_seed",
                                 "source_run")} for i in items]
    merge = {"init_seed": items[0]["init_seed"], "data_seed": None,
             "lora_scale": items[0]["lora_scale"], "method": "uniform soup of merged models"}
    manifest = save_embedding_model(soup, Path(out), extra={"merge": merge,
                                                             "soup": {"ingredients": record}})
    log(f"soup of {len(items)} models ({items[0]['fields']['variant']}, init seed "
        f"{items[0]['init_seed']}, data seeds {[i['data_seed'] for i in items]}) -> {out}")
    return manifest
