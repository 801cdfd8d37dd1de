"""Causality probe: every architecture x mode x attn_implementation, with and without padding."""

import functools

import pytest
import torch

from toolchain.errors import ToolchainError
from toolchain.modeling.backbone import causality_delta, load_backbone, verify_attention
from toolchain.presets import load_preset

from conftest import TINY_PRESETS


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_first_token_moves_only_under_bidirectional(preset, attention, impl):
    model, _ = load_backbone(load_preset(preset).backbone, attention, impl)
    assert model.config._attn_implementation == impl
    for pad_left in (0, 5):
        delta = causality_delta(model, model.config.vocab_size, pad_left=pad_left)
        if attention == "causal":
            assert delta < 1e-6, (preset, impl, pad_left, delta)
        else:
            assert delta > 1e-3, (preset, impl, pad_left, delta)


def test_padded_row_equals_unpadded_row_bidirectional():
    """Padding keys are masked: a left-padded copy gives the same states as the bare sequence."""
    model, _ = load_backbone(load_preset("tiny-mistral").backbone, "bidirectional", "eager")
    ids = torch.randint(3, 1000, (1, 6))
    bare = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    padded_ids = torch.cat([torch.zeros((1, 4), dtype=ids.dtype), ids], dim=1)
    mask = torch.cat([torch.zeros((1, 4), dtype=ids.dtype), torch.ones_like(ids)], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    padded = model(input_ids=padded_ids, attention_mask=mask, position_ids=positions).last_hidden_state
    torch.testing.assert_close(padded[:, 4:], bare, atol=1e-5, rtol=1e-5)


def test_verify_attention_rejects_wrong_mode():
    """A config that disagrees is caught, and so is a model that claims bidirectional in its
    config but runs causally (forced here through the per-call is_causal override)."""
    model, _ = load_backbone(load_preset("tiny-llama").backbone, "causal", "eager")
    with pytest.raises(ToolchainError, match="config says causal"):
        verify_attention(model, "bidirectional")
    model, _ = load_backbone(load_preset("tiny-llama").backbone, "bidirectional", "eager")
    verify_attention(model, "bidirectional")
    model.forward = functools.partial(model.forward, is_causal=True)
    with pytest.raises(ToolchainError, match="behaves causal"):
        verify_attention(model, "bidirectional")
