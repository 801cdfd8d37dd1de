"""`poolattn plan`: the memory model, its calibration, the shipped 7B presets and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from toolchain.cli import main
from toolchain.errors import ToolchainError
from toolchain.modeling import build_embedding_model
from toolchain.modeling.lora import LoraSettings, apply_lora
from toolchain.modeling.pooling import HeadConfig
from toolchain.modeling.shapes import ModelShape
from toolchain.plan import (ACTIVATION_ELEMENTS, PlanSettings, backbone_parameter_count,
                            head_activation_bytes, layer_activation_elements, plan_memory,
                            settings_for_preset)
from toolchain.presets import list_presets, load_preset


def _plan(preset: str = "mistral-7b", **overrides):
    loaded = load_preset(preset)
    return plan_memory(settings_for_preset(loaded, **overrides), ModelShape.from_preset(loaded),
                       with_deepspeed=False)


def _rows(plan, prefix: str, key: str = "gpu_no_ckpt") -> int:
    return sum(r[key] for r in plan.rows if r["component"].startswith(prefix))


@pytest.mark.parametrize("preset", list_presets())
def test_plan_runs_on_every_shipped_preset(preset):
    plan = _plan(preset, gpus=1)
    assert plan.total(False) > plan.counts["base"] * 2  # at least the bf16 weights
    assert set(plan.verdicts()) == {"no_checkpointing", "checkpointing"}


def test_more_gpus_less_memory_per_gpu_under_zero3():
    totals = [_plan(gpus=n, zero_stage=3).total(True) for n in (1, 2, 4, 8)]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == 4


def test_checkpointing_saves_activation_bytes():
    plan = _plan(chunk_size=8)
    assert _rows(plan, "acts: decoder", "gpu_ckpt") < _rows(plan, "acts: decoder") / 5
    assert plan.total(True) < plan.total(False)


def test_paper_head_costs_more_than_compact():
    paper, compact = _plan(head_size="paper"), _plan(head_size="compact")
    assert paper.counts["head"] > 1.2e9 > 2e8 > compact.counts["head"]  # 1.28 B vs 0.12 B
    assert _rows(paper, "acts: head") > _rows(compact, "acts: head")
    assert paper.total(True) > compact.total(True)


def test_offload_moves_optimizer_state_to_cpu():
    on_gpu, offloaded = _plan(zero_stage=3, offload=False), _plan(zero_stage=3, offload=True)
    assert _rows(offloaded, "optimizer") == 0 < _rows(on_gpu, "optimizer")
    cpu = sum(r["cpu"] for r in offloaded.rows)
    assert cpu == _rows(on_gpu, "optimizer") + _rows(on_gpu, "grads: fp32")
    assert offloaded.total(True) == on_gpu.total(True) - cpu


def test_offload_needs_zero3():
    with pytest.raises(ToolchainError, match="ZeRO-3"):
        _plan(zero_stage=2, offload=True)


@pytest.mark.parametrize("preset,variant", [("tiny-mistral", "m5"), ("tiny-llama", "m2"),
                                            ("tiny-qwen2", "m3")])
def test_trainable_count_equals_peft(preset, variant):
    model = apply_lora(build_embedding_model(preset, variant, verify=False), LoraSettings())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    plan = _plan(preset, gpus=1, variant=variant, head_size="compact")
    assert plan.counts["trainable"] == trainable
    if preset != "tiny-qwen2":  # Qwen2's q/k/v biases are not in the bias-free base count
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        assert backbone_parameter_count(ModelShape.from_preset(load_preset(preset))) == frozen


def _saved_elements_per_token(layers: int, dtype: torch.dtype, dropout: float) -> float:
    """Re-measure what ACTIVATION_ELEMENTS claims: saved tensors of a LoRA Mistral forward."""
    from peft import LoraConfig, get_peft_model
    from transformers import MistralConfig, MistralModel

    torch.manual_seed(0)
    config = MistralConfig(hidden_size=80, intermediate_size=272, num_hidden_layers=layers,
                           num_attention_heads=5, num_key_value_heads=1, vocab_size=300)
    config.is_causal, config._attn_implementation = False, "sdpa"
    model = get_peft_model(MistralModel(config).to(dtype),
                           LoraConfig(r=8, lora_dropout=dropout, target_modules=list(
                               LoraSettings().target_modules))).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, 300, (2, 20))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, attention_mask=mask)
    return sum(saved.values()) / ids.numel() / dtype.itemsize


@pytest.mark.parametrize("precision,dropout", [("fp32", 0.1), ("bf16", 0.1), ("fp32", 0.0)])
def test_activation_coefficients_match_a_fresh_measurement(precision, dropout):
    dtype = torch.float32 if precision == "fp32" else torch.bfloat16
    per_layer = (_saved_elements_per_token(2, dtype, dropout)
                 - _saved_elements_per_token(1, dtype, dropout))
    shape = ModelShape(80, 2, 272, 5, 1, 300)  # not one of the fitted shapes
    assert (precision, dropout > 0) in ACTIVATION_ELEMENTS
    assert per_layer == layer_activation_elements(shape, precision, 8, dropout, seq_len=20)


def test_head_activation_count_on_meta_equals_real_tensors():
    from torch.multiprocessing.reductions import StorageWeakRef

    from toolchain.modeling.pooling import build_pooler

    config = HeadConfig.from_size("compact", pooling="multi_layer_trainable",
                                  attention="bidirectional", hidden_size=32, num_layers=3)
    torch.manual_seed(0)
    head = build_pooler(config)
    layers = tuple(torch.randn(4, 10, 32, requires_grad=True) for _ in range(4))
    skip = {StorageWeakRef(t.untyped_storage()).cdata for t in (*head.parameters(), *layers)}
    saved: dict[int, int] = {}

    def pack(t):
        key = StorageWeakRef(t.untyped_storage()).cdata
        if key not in skip:
            saved[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        head({"token_embeddings": layers[-1], "attention_mask": torch.ones(4, 10, dtype=torch.long),
              "all_layer_embeddings": layers})
    assert head_activation_bytes(config, 4, 10, torch.float32) == sum(saved.values()) > 0


def test_mistral_7b_preset_is_the_paper_recipe():
    from toolchain.train.config import config_for_preset

    preset = load_preset("mistral-7b")
    cfg = config_for_preset(preset)
    assert (cfg.lr, cfg.warmup_steps, cfg.steps, cfg.batch_size, cfg.max_length) == (
        1e-5, 100, 1000, 2048, 512)
    assert (cfg.precision, cfg.zero_stage, cfg.temperature) == ("bf16", 3, 0.05)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (16, 32, 0.1)
    assert cfg.chunk_size and cfg.grad_accum == 1  # GradCache: negatives span the whole step
    assert preset.backbone.source == "hf_dir" and preset.head_size == "paper"
    plan = plan_memory(settings_for_preset(preset), ModelShape.from_preset(preset),
                       with_deepspeed=False)
    ckpt = "checkpointing" if cfg.gradient_checkpointing else "no_checkpointing"
    assert plan.verdicts()[ckpt][80]  # the shipped chunk size fits 8 x 80 GB


def test_cli_plan_json_and_deepspeed_estimate():
    result = CliRunner().invoke(main, ["plan", "--preset", "mistral-7b", "--gpus", "8",
                                       "--zero", "3", "--head", "compact", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)  # nothing but JSON on stdout
    ds = data["deepspeed_estimators"]
    assert "estimate_zero3_model_states_mem_needs" in ds["function"]
    # DeepSpeed counts all ~7.2 B parameters as trainable; LoRA-aware states are far smaller.
    assert ds["lora_aware_model_states_bytes"] < ds["gpu_bytes"] / 2
    assert data["settings"]["head_size"] == "compact"


def test_cli_plan_table_and_errors():
    runner = CliRunner()
    table = runner.invoke(main, ["plan", "--preset", "qwen2-0.5b", "--gpus", "1", "--zero", "2"])
    assert table.exit_code == 0, table.output
    assert "verdict checkpointing" in table.output and "DeepSpeed" in table.output
    bad = runner.invoke(main, ["plan", "--preset", "mistral-7b", "--zero", "2", "--offload"])
    assert bad.exit_code == 2 and "ZeRO-3" in bad.output
    assert "poolattn plan --preset mistral-7b --gpus 8" in runner.invoke(
        main, ["plan", "--help"]).output


def test_settings_reject_indivisible_batch():
    with pytest.raises(ToolchainError, match="divisible"):
        PlanSettings(preset="x", gpus=3, batch_size=2048)


def test_shape_from_hf_config_equals_shape_from_its_json():
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=500)
    shape = ModelShape.from_config(config)
    assert shape == ModelShape(64, 3, 160, 4, 2, 500)
    assert ModelShape.from_config(config.to_dict()) == shape
    no_kv = {k: v for k, v in config.to_dict().items() if k != "num_key_value_heads"}
    assert ModelShape.from_config(no_kv).num_kv_heads == 4  # multi-head attention
    with pytest.raises(ToolchainError, match="hidden_size"):
        ModelShape.from_config({**no_kv, "hidden_size": None})


def test_settings_validate_through_train_config():
    with pytest.raises(ToolchainError, match="plan: train.zero_stage"):
        PlanSettings(preset="x", zero_stage=1)
    with pytest.raises(ToolchainError, match="--seq-len"):
        PlanSettings(preset="x", seq_len=0)
    settings = PlanSettings(preset="x", chunk_size=0, precision="auto")
    assert (settings.chunk_size, settings.precision) == (None, "bf16")  # as train: reads them


def test_plan_check_script_predicts_its_cases(monkeypatch):
    import importlib.util
    import sys

    from toolchain.paths import project_root

    path = project_root() / "benchmarks" / "plan_check" / "plan_check.py"
    spec = importlib.util.spec_from_file_location("plan_check", path)
    plan_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "plan_check", plan_check)  # its dataclasses look it up
    spec.loader.exec_module(plan_check)
    predicted = plan_check.predict(plan_check.CASES[0])
    assert predicted["trainable"] > 0 and predicted["step_peak_bytes"] > 0
    assert "benchmarks/plan_check/plan_check.py" in plan_check.COMMAND


def test_zero3_keeps_gathered_parameters_up_to_max_live():
    """Below stage3_max_live_parameters (1e9 in the shipped configs) ZeRO-3 keeps the whole model
    gathered while it will be reused: the live row is the whole model; at 7B it is 1e9 params."""
    from toolchain.plan.memory import max_live_parameters

    width = _plan("mistral-7b-width", gpus=2, zero_stage=3, offload=True, precision="fp32")
    live = next(r for r in width.rows if r["component"].startswith("ZeRO-3 live"))
    assert max_live_parameters(width.settings) == 10**9
    assert live["gpu_ckpt"] == 4 * width.counts["total"]  # 0.69 B < 1e9: all of it, fp32
    seven = _plan("mistral-7b", gpus=8)
    live = next(r for r in seven.rows if r["component"].startswith("ZeRO-3 live"))
    assert live["gpu_ckpt"] == 2 * 10**9  # 8.4 B > 1e9: the cap, bf16
    zero2 = _plan("mistral-7b", gpus=8, zero_stage=2)
    assert all(r["gpu_ckpt"] == 0 for r in zero2.rows if r["component"].startswith("ZeRO-3 live"))


def test_cpu_rank_peak_is_runtime_plus_the_larger_of_build_and_training():
    from toolchain.plan.cpu_rank import cpu_rank_peak

    plan = _plan("mistral-7b-width", gpus=2, zero_stage=3, offload=True, precision="fp32",
                 device="cpu")
    rank = cpu_rank_peak(plan, runtime=500 * 2**20)
    assert rank["build"] == 500 * 2**20 + 4 * plan.counts["total"]
    assert rank["train"] == 500 * 2**20 + plan.total(True) + sum(r["cpu"] for r in plan.rows)
    assert rank["peak"] == max(rank["build"], rank["train"]) > rank["runtime"]
    assert cpu_rank_peak(plan)["runtime"] > 100 * 2**20  # measured: torch + deepspeed imported
    with pytest.raises(ToolchainError, match="device must be gpu or cpu"):
        settings_for_preset("tiny-mistral", device="tpu")


def test_cli_plan_device_cpu_prints_the_rank_peak():
    result = CliRunner().invoke(main, ["plan", "--preset", "mistral-7b-width", "--gpus", "2",
                                       "--zero", "3", "--offload", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["settings"]["device"] == "cpu" and data["cpu_rank"]["peak"] > 0
