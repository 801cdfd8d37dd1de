"""Every registered head and every variant: shape, unit norm, gradients, batch/padding invariance."""

import pytest
import torch

from toolchain.modeling import POOLERS, VARIANTS, HeadConfig, build_embedding_model
from toolchain.modeling.pooling import build_pooler, head_macs

from conftest import TINY_PRESETS

PAIRS = [(v.pooling, v.attention) for v in VARIANTS.values()] + [
    ("mean", "causal"), ("mean", "bidirectional"), ("latent_attention", "bidirectional"),
    ("eos_last", "bidirectional")]


def features(batch=3, length=7, hidden=32, layers=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    states = tuple(torch.randn(batch, length, hidden, generator=gen) for _ in range(layers + 1))
    mask = torch.ones(batch, length, dtype=torch.int64)
    mask[1, :3] = 0  # left padded row
    mask[2, 5:] = 0  # right padded row
    return {"token_embeddings": states[-1], "attention_mask": mask, "all_layer_embeddings": states}


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
@pytest.mark.parametrize("pooling", sorted(POOLERS))
def test_head_shape_and_gradients(pooling, attention):
    config = HeadConfig.from_size("compact", pooling=pooling, attention=attention, hidden_size=32,
                                  num_layers=3, num_heads=4)
    head = build_pooler(config)
    feats = features()
    feats["token_embeddings"].requires_grad_(True)
    out = head(feats)["sentence_embedding"]
    assert out.shape == (3, 32)
    torch.nn.functional.normalize(out, dim=-1).sum().backward()
    params = list(head.parameters())
    assert (len(params) > 0) == (pooling not in ("eos_last", "mean"))
    # With a single key (m2: the EOS state only) softmax weights are identically 1, so the query
    # path gets exactly zero gradient (as in the reference); every other parameter must learn.
    single_key = pooling == "last_layer_trainable" and config.token_input == "eos"
    query_path = ("block.to_q.weight", "block.norm_latents.weight", "block.norm_latents.bias")
    for name, p in head.named_parameters():
        if single_key and name in query_path:
            assert p.grad is None or p.grad.abs().sum() == 0, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bidirectional_last_layer_head_masks_padded_keys():
    """m4's head ignores padded positions: changing a padded state must not change the output."""
    config = HeadConfig.from_size("compact", pooling="last_layer_trainable", attention="bidirectional",
                                  hidden_size=32, num_layers=3, num_heads=4)
    head = build_pooler(config)
    feats = features()
    before = head(feats)["sentence_embedding"]
    feats["token_embeddings"] = feats["token_embeddings"].clone()
    feats["token_embeddings"][1, :3] += 100.0  # padded positions of the left-padded row
    feats["token_embeddings"][2, 5:] -= 100.0  # padded positions of the right-padded row
    after = head(feats)["sentence_embedding"]
    torch.testing.assert_close(after, before)


def test_multi_layer_summary_follows_attention():
    causal = HeadConfig(pooling="multi_layer_trainable", hidden_size=8, num_layers=2, num_heads=2)
    bidir = HeadConfig(pooling="multi_layer_trainable", hidden_size=8, num_layers=2, num_heads=2,
                       attention="bidirectional")
    forced = HeadConfig(pooling="multi_layer_trainable", hidden_size=8, num_layers=2, num_heads=2,
                        attention="bidirectional", layer_summary="eos")
    assert (causal.layer_summary, bidir.layer_summary, forced.layer_summary) == ("eos", "mean", "eos")


def test_paper_head_matches_reference_size():
    """Reference head at Mistral-7B shape: ~1.28 B parameters, ~587 GMAC of which ~206 fixed."""
    from toolchain.modeling.pooling import head_parameter_count

    config = HeadConfig.from_size("paper", pooling="multi_layer_trainable", hidden_size=4096,
                                  num_layers=32)
    assert 1.27e9 < head_parameter_count(config) < 1.29e9
    macs = head_macs(config, 128)
    assert 585e9 < macs["total"] < 590e9
    assert macs["input_independent"] == 768 * 4096 * 32 * 2048


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("pooling,attention", PAIRS)
@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_batch_and_padding_invariance(preset, pooling, attention, padding_side, texts):
    model = build_embedding_model(preset, pooling=pooling, attention=attention, verify=False)
    model.tokenizer.padding_side = padding_side
    batched = model.encode(texts)
    assert batched.dtype == torch.float32
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(len(texts)))
    for i, text in enumerate(texts):
        alone = model.encode([text])
        torch.testing.assert_close(alone[0], batched[i], atol=1e-5, rtol=1e-5)
    model.tokenizer.padding_side = "left" if padding_side == "right" else "right"
    torch.testing.assert_close(model.encode(texts), batched, atol=1e-5, rtol=1e-5)


def test_a_head_must_state_its_cost():
    """Registration refuses a head without macs(config, seq_len): the bench and the planner
    would otherwise price it with another head's formula."""
    from toolchain.errors import ToolchainError
    from toolchain.modeling.pooling import PoolingHead, register_pooler

    class Costless(PoolingHead):
        def forward(self, features: dict) -> dict:
            return {**features, "sentence_embedding": features["token_embeddings"][:, -1]}

    with pytest.raises(ToolchainError, match="does not define macs"):
        register_pooler("costless_test_head")(Costless)
    assert "costless_test_head" not in POOLERS


def test_precomputable_queries_are_the_heads_own():
    """Perceiver heads expose their input-independent queries; parameter-free and
    token-query heads have none (the export stores only what the head returns)."""
    for pooling in sorted(POOLERS):
        config = HeadConfig.from_size("compact", pooling=pooling, attention="bidirectional",
                                      hidden_size=32, num_layers=3, num_heads=4)
        head = build_pooler(config)
        queries = head.precomputable_queries()
        if pooling in ("last_layer_trainable", "multi_layer_trainable"):
            assert queries.shape == (1, 4, config.n_latents, 8)
            assert head_macs(config, 5)["input_independent"] > 0
        else:
            assert queries is None
