"""GradCache and the loss on the real tiny model (LoRA via peft, dropout on), without an engine:
the cached-gradient backward equals the big-batch backward drawn with the same dropout masks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from toolchain.modeling import build_embedding_model
from toolchain.modeling.lora import LoraSettings, apply_lora
from toolchain.train.gradcache import RngState, backward_from_cache, embed_without_graph
from toolchain.train.loss import info_nce

TEXTS = ["apple river", "the river and the apple with stone", "the cloud and the music",
         "stone cloud", "the cloud and the stone with tiger", "the winter and the coffee",
         "forest garden", "the garden and the forest with pencil", "the dragon and the rocket",
         "silver window", "the window and the silver with castle", "the marble and the jungle"]


def _queries_positives_negatives(emb: torch.Tensor):
    return emb[0::3], emb[1::3], emb[2::3]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matmuls gain nothing from a second thread and lose a lot when cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    model = build_embedding_model("tiny-mistral", "m3", verify=False)
    apply_lora(model, LoraSettings(dropout=0.1))
    for name, p in model.named_parameters():  # non-zero LoRA B so dropout shapes the gradient
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return model.train()


def _grads(model) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def _chunks(model, size: int):
    return [model.tokenizer(TEXTS[i:i + size]) for i in range(0, len(TEXTS), size)]


def _embed(model):
    return lambda chunk: model(chunk["input_ids"], chunk["attention_mask"])


def test_info_nce_matches_the_formula():
    gen = torch.Generator().manual_seed(0)
    q, p, n = (torch.randn(4, 8, generator=gen) for _ in range(3))
    out = info_nce(q, p, n, temperature=0.05)
    cand = F.normalize(torch.cat([p, n]), dim=-1)
    logits = F.normalize(q, dim=-1) @ cand.T * 20
    assert out.logits.shape == (4, 8)
    assert torch.allclose(out.loss, F.cross_entropy(logits, torch.arange(4)), atol=1e-6)


def test_gradcache_equals_big_batch_with_replayed_dropout(model):
    embed, chunks = _embed(model), _chunks(model, 4)
    # Reference: the whole batch's graph kept at once, chunk by chunk, same RNG stream.
    torch.manual_seed(7)
    reps = torch.cat([embed(c) for c in chunks])
    reference_loss = info_nce(*_queries_positives_negatives(reps)).loss
    reference_loss.backward()
    reference = _grads(model)

    torch.manual_seed(7)
    reps, states = embed_without_graph(embed, chunks)
    reps = reps.detach().requires_grad_()
    loss = info_nce(*_queries_positives_negatives(reps)).loss
    loss.backward()
    backward_from_cache(embed, chunks, states, reps.grad, lambda s, last: s.backward())
    cached = _grads(model)

    assert torch.allclose(loss, reference_loss, atol=1e-6)
    assert reference.keys() == cached.keys() and any("lora_A" in k for k in cached)
    for name in reference:
        assert torch.allclose(cached[name], reference[name], atol=1e-6, rtol=1e-4), name

    # Without the replay the re-forward draws new dropout masks: the gradients differ.
    torch.manual_seed(7)
    reps, states = embed_without_graph(embed, chunks)
    reps = reps.detach().requires_grad_()
    info_nce(*_queries_positives_negatives(reps)).loss.backward()
    fresh = [RngState() for _ in states]
    backward_from_cache(embed, chunks, fresh, reps.grad, lambda s, last: s.backward())
    unreplayed = _grads(model)
    assert any(not torch.allclose(unreplayed[n], reference[n], atol=1e-6) for n in reference)
