"""Backbones from a plain local HF directory (no is_causal key) and from the real SmolLM2 GGUF."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from toolchain.modeling.backbone import _load_tokenizer, load_backbone, verify_attention
from toolchain.presets import BackboneSpec, load_preset


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_plain_hf_directory_in_both_modes(tmp_path, attention):
    """A CausalLM checkpoint as users download it: is_causal absent from config.json."""
    tokenizer = _load_tokenizer("smollm2-tokenizer")
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tokenizer))
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert "is_causal" not in json.loads((tmp_path / "config.json").read_text())
    model, _ = load_backbone(BackboneSpec(source="hf_dir", path=str(tmp_path)), attention, "eager")
    verify_attention(model, attention)


@pytest.mark.slow
def test_smollm2_asset_loads_real_weights():
    """The converted safetensors copy of the real SmolLM2 GGUF loads causal with real dims."""
    from toolchain.assets import fetch_asset

    preset = load_preset("smollm2-135m")
    model, tokenizer = load_backbone(preset.backbone, "causal")
    verify_attention(model, "causal")
    gguf_dir = fetch_asset("smollm2-135m-instruct")
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    ids = tokenizer(["The cat sat on the mat."], return_tensors="pt")
    out = model(**ids).last_hidden_state
    assert torch.isfinite(out).all() and out.abs().max() > 0
    assert (gguf_dir / "model.safetensors").stat().st_size > 400e6
