"""The recipe on the real DeepSpeed engine, one process (gloo on CPU), ZeRO-2 and ZeRO-3:
the loss falls, GradCache equals the plain big-batch step, checkpoints are non-empty and reload
to the same outputs."""

from __future__ import annotations


import pytest
import torch

from conftest import launcher_variables_restored
from test_train_config import make_learnable_jsonl
from toolchain.errors import ToolchainError
from toolchain.modeling.lora import load_trained
from toolchain.train import TrainConfig, TrainRecipe
from toolchain.train.checkpoint import gathered_trainable
from toolchain.train.rundir import read_metrics

PROBE = ["apple river", "the tiger and the coffee with castle", "winter"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls gain nothing from a second thread and lose a lot when cores are shared.
    Also puts back the launcher variables the single-process engine sets."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with launcher_variables_restored():
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_learnable_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", rows=64)


def _recipe(data, run_dir, variant="m2", **overrides) -> TrainRecipe:
    settings = dict(data=str(data), steps=8, batch_size=8, max_length=24, warmup_steps=1,
                    save_every=4, lr=2e-3, seed=1, precision="fp32")
    lora = overrides.pop("lora", None)
    config = TrainConfig(**{**settings, **overrides})
    if lora is not None:
        config.lora.dropout = lora
    recipe = TrainRecipe("tiny-mistral", config, variant=variant, run_dir=run_dir, resume=False)
    recipe.setup()
    return recipe


@torch.no_grad()
def _live_embeddings(recipe: TrainRecipe, tokenizer) -> torch.Tensor:
    recipe.engine.eval()
    batch = tokenizer(PROBE)
    return recipe._embed(batch).cpu()


@pytest.mark.parametrize("zero,offload", [(2, False), (3, False), (3, True)])
def test_loss_falls_and_checkpoints_reload(data, tmp_path, zero, offload):
    recipe = _recipe(data, tmp_path / "run", zero_stage=zero, offload=offload,
                     chunk_size=8 if zero == 3 else None)
    if zero == 3:  # before any step LoRA B is all zeros: saving it must be refused
        with pytest.raises(ToolchainError, match="all zeros"):
            gathered_trainable(recipe.model)
    losses = recipe.train()
    assert len(losses) == 8 and sum(losses[-3:]) / 3 < losses[0] - 0.3, losses
    metrics = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 9))
    assert all(m["candidates"] == 16 and m["tokens_per_s"] > 0 for m in metrics)
    assert metrics[0]["lr"] < metrics[1]["lr"] and metrics[-1]["lr"] < metrics[1]["lr"]
    assert (tmp_path / "run" / "checkpoints" / "step-4" / "engine").is_dir()
    for ckpt in ("checkpoints/step-4", "final"):
        model, _, info = load_trained(tmp_path / "run" / ckpt, verify=False)
        assert info["variant"] == "m2"
    expected = _live_embeddings(recipe, model.tokenizer)
    with torch.no_grad():
        batch = model.tokenizer(PROBE)
        reloaded = model(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(reloaded, expected, atol=1e-5)


def _full_grads(recipe: TrainRecipe) -> dict[str, torch.Tensor]:
    from deepspeed.utils import safe_get_full_grad

    return {n: safe_get_full_grad(p).clone() for n, p in recipe.model.named_parameters()
            if p.requires_grad}


@pytest.mark.parametrize("zero", [2, 3])
def test_gradcache_equals_plain_big_batch_step(data, tmp_path, zero):
    results = []
    for chunk in (None, 5):  # 5 does not divide the 24 texts: a ragged last chunk
        # the GradCache run also recomputes activations (gradient checkpointing): same gradients
        recipe = _recipe(data, tmp_path / f"run{chunk}", zero_stage=zero, chunk_size=chunk, lora=0.0,
                         gradient_checkpointing=chunk is not None)
        layers = recipe.model.backbone.base_model.model.layers
        assert all(layer.gradient_checkpointing == (chunk is not None) for layer in layers)
        step = recipe.accumulate(0)
        results.append((step, _full_grads(recipe)))
    (plain, plain_grads), (cached, cached_grads) = results
    assert abs(plain.loss - cached.loss) < 1e-5 and plain.candidates == cached.candidates == 16
    assert plain_grads.keys() == cached_grads.keys()
    assert any(g.abs().sum() > 0 for n, g in plain_grads.items() if "lora_B" in n)
    for name, grad in plain_grads.items():
        assert torch.allclose(cached_grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_length_grouping_changes_padding_not_the_step(data, tmp_path):
    """Grouping a step's texts by length only changes how they are cut into forward passes:
    the loss and every gradient equal the one-padded-batch step's."""
    results = []
    for group_rows in (None, 5):
        recipe = _recipe(data, tmp_path / f"run{group_rows}", variant="m5", lora=0.0,
                         group_rows=group_rows)
        chunked = recipe._tokenize(recipe.plan.batch(0))
        results.append((recipe.accumulate(0), _full_grads(recipe), chunked))
    (plain, plain_grads, plain_chunks), (grouped, grouped_grads, grouped_chunks) = results
    assert len(plain_chunks.chunks) == 1 < len(grouped_chunks.chunks)
    assert plain.tokens == grouped.tokens  # (texts this short pad more once widths are rounded)
    assert abs(plain.loss - grouped.loss) < 1e-5
    for name, grad in plain_grads.items():
        assert torch.allclose(grouped_grads[name], grad, atol=1e-6, rtol=1e-4), name


def test_bf16_loss_tracks_fp32_over_50_steps(data, tmp_path):
    """DeepSpeed bf16 (bf16 weights and activations, fp32 master weights) follows the fp32 loss
    curve: the mean of every 10-step window within 0.15 (about 5 % of the starting loss)."""
    curves = {}
    for precision in ("fp32", "bf16"):
        recipe = _recipe(data, tmp_path / precision, variant="m5", steps=50, save_every=0,
                         precision=precision, lora=0.0)
        curves[precision] = torch.tensor(recipe.train())
        rows = read_metrics(tmp_path / precision / "metrics.jsonl")
        assert {row["precision"] for row in rows} == {precision}
        assert all(0 <= row["padding_fraction"] < 1 and row["peak_rss_mb"] > 0 for row in rows)
    fp32, bf16 = curves["fp32"], curves["bf16"]
    assert fp32[-10:].mean() < fp32[:10].mean() - 0.5  # a curve worth tracking
    assert not torch.equal(fp32, bf16)  # bf16 really ran in bf16
    windows = (fp32 - bf16).reshape(5, 10).mean(dim=1).abs()
    assert windows.max() < 0.15, windows


def test_packed_bits_dropout_keeps_nine_in_ten_and_replays():
    """The LoRA dropout's masks: keep rate 1 - p, kept values scaled by 1 / (1 - p), the same
    mask under the same RNG state (what GradCache's replay and exact resume rely on)."""
    from toolchain.modeling.dropout import PackedBitsDropout

    layer = PackedBitsDropout(0.1).train()
    x = torch.ones(1001, 513)  # an odd size: the mask is cut from 64-bit words
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)
    kept = first != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.002
    assert torch.allclose(first[kept], torch.full_like(first[kept], 1 / 0.9))
    assert torch.equal(layer.eval()(x), x)


def test_head_learns_at_its_own_rate(data, tmp_path):
    """head_lr puts the head's parameter groups at their own peak rate; LoRA keeps lr."""
    recipe = _recipe(data, tmp_path / "run", variant="m5", head_lr=1e-2)
    rates = recipe.engine.get_lr()
    assert len(set(rates)) == 2 and max(rates) / min(rates) == pytest.approx(1e-2 / 2e-3)
    step = recipe.accumulate(0)
    recipe.engine.step()
    assert step.loss > 0


@pytest.mark.parametrize("chunk", [None, 5])
def test_bf16_with_gradient_checkpointing_trains(data, tmp_path, chunk):
    """bf16 on CPU runs SDPA's math kernel; checkpointing recomputes layers inside backward,
    which must run on the same kernel (else torch raises CheckpointError: the recompute saves
    other tensors). Seen first at Mistral-7B width on a CPU with bf16 units."""
    recipe = _recipe(data, tmp_path / "run", variant="m5", steps=2, save_every=0,
                     precision="bf16", gradient_checkpointing=True, chunk_size=chunk, zero_stage=3)
    losses = recipe.train()
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert {m["precision"] for m in read_metrics(tmp_path / "run" / "metrics.jsonl")} == {"bf16"}
