"""`--data-seed` and `poolattn soup`: runs that differ only in data order and dropout share their
initialisation, and the soup of their merged models is the exact mean of their weights, embeds
differently from each ingredient and refuses ingredients that do not belong together."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from conftest import TEXTS
# one torch thread with the launcher variables put back; the learnable rows; the recipe
from test_train_engine import _recipe, data, one_thread  # noqa: F401
from toolchain.cli import main
from toolchain.errors import ToolchainError
from toolchain.merge import merge_run
from toolchain.modeling import load_embedding_model
from toolchain.soup import soup_models
from toolchain.train import TrainRecipe


def _initial_trainables(recipe: TrainRecipe) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in recipe.model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def merged_runs(data, tmp_path_factory):
    """Three trained and merged tiny m5 runs: (seed 1, data seeds 1 and 7) and seed 2."""
    root = tmp_path_factory.mktemp("soup")
    out, starts, first_batches = {}, {}, {}
    for name, seed, data_seed in (("d1", 1, None), ("d7", 1, 7), ("s2", 2, None)):
        recipe = _recipe(data, root / name, variant="m5", steps=4, save_every=0, seed=seed,
                         data_seed=data_seed)
        starts[name] = _initial_trainables(recipe)
        first_batches[name] = recipe.plan.batch(0).queries
        recipe.train()
        merge_run(root / name, log=lambda *_: None)
        out[name] = root / name / "merged"
    return root, out, starts, first_batches


def test_data_seed_changes_data_order_but_not_initialisation(merged_runs):
    _, _, starts, first_batches = merged_runs
    assert starts["d1"].keys() == starts["d7"].keys()
    for name, value in starts["d1"].items():
        assert torch.equal(value, starts["d7"][name]), name  # head and LoRA init alike
    assert any(not torch.equal(v, starts["s2"][n]) for n, v in starts["d1"].items())
    assert first_batches["d1"] != first_batches["d7"]


def test_soup_is_the_mean_of_its_ingredients(merged_runs):
    root, merged, _, _ = merged_runs
    result = CliRunner().invoke(main, ["soup", str(merged["d1"]), str(merged["d7"]),
                                       "--out", str(root / "soup")])
    assert result.exit_code == 0, result.output
    soup = load_embedding_model(root / "soup")
    ingredients = [load_embedding_model(merged[k]) for k in ("d1", "d7")]
    states = [m.state_dict() for m in ingredients]
    moved = 0
    for key, value in soup.state_dict().items():
        torch.testing.assert_close(value, (states[0][key] + states[1][key]) / 2, rtol=0,
                                   atol=1e-6)
        moved += not torch.equal(states[0][key], states[1][key])
    assert moved > 10  # the runs really differ, in backbone and head
    with torch.no_grad():
        embeddings = [m.encode(TEXTS) for m in (soup, *ingredients)]
    for other in embeddings[1:]:
        assert (embeddings[0] - other).abs().max() > 1e-4
    manifest = json.loads((root / "soup/manifest.json").read_text())
    record = manifest["soup"]["ingredients"]
    assert [r["data_seed"] for r in record] == [None, 7] and manifest["merge"]["init_seed"] == 1
    assert all(len(r["manifest_sha256"]) == 64 for r in record)


@pytest.mark.parametrize("pick,message", [
    (("d1", "s2"), "merge.init_seed 2 differs"),
    (("d1",), "at least 2 merged models"),
    (("d1", "d1"), "repeat a data seed"),
])
def test_soup_refuses_ingredients_that_do_not_belong_together(merged_runs, pick, message):
    root, merged, _, _ = merged_runs
    target = root / f"refused-{'-'.join(pick)}"
    with pytest.raises(ToolchainError, match=message):
        soup_models([merged[k] for k in pick], target, log=lambda *_: None)
    assert not target.exists()


def test_soup_refuses_a_model_that_is_not_a_merged_run(merged_runs, tmp_path):
    _, merged, _, _ = merged_runs
    from toolchain.cli.core import init_command

    untrained = tmp_path / "untrained"
    result = CliRunner().invoke(init_command, ["--preset", "tiny-qwen2", "--variant", "m5",
                                               "--out", str(untrained)])
    assert result.exit_code == 0, result.output
    with pytest.raises(ToolchainError, match=r"manifest.json: merge.init_seed: missing"):
        soup_models([merged["d1"], untrained], tmp_path / "soup", log=lambda *_: None)
