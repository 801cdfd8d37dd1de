"""Bad input gets a clear error; presets load; the CLI's help and errors."""

import pytest
import torch
from click.testing import CliRunner

from toolchain.cli import main
from toolchain.errors import ToolchainError
from toolchain.modeling import build_embedding_model
from toolchain.modeling.backbone import load_backbone
from toolchain.presets import BackboneSpec, list_presets, load_preset


def test_every_shipped_preset_loads():
    names = list_presets()
    assert {"tiny-mistral", "tiny-qwen2", "tiny-llama", "smollm2-135m"} <= set(names)
    for name in names:
        assert load_preset(name).name == name


@pytest.mark.parametrize("kwargs,match", [
    ({"variant": "m9"}, "unknown variant 'm9'"),
    ({"pooling": "max", "attention": "causal"}, "unknown pooling 'max'"),
    ({"pooling": "mean", "attention": "sideways"}, "unknown attention 'sideways'"),
    ({"pooling": "mean"}, "both pooling and attention"),
])
def test_unknown_names(kwargs, match):
    with pytest.raises(ToolchainError, match=match):
        build_embedding_model("tiny-mistral", **kwargs)


def test_unknown_preset():
    with pytest.raises(ToolchainError, match="unknown preset 'nope'; known: .*tiny-mistral"):
        load_preset("nope")


def test_bad_preset_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbackbone:\n  source: config\n  architecture: [unclosed\n")
    with pytest.raises(ToolchainError, match=r"bad.yaml:\d+: invalid YAML"):
        load_preset(bad)
    bad.write_text("name: bad\nbackbone:\n  source: ftp\n")
    with pytest.raises(ToolchainError, match=r"bad.yaml: backbone.source 'ftp'"):
        load_preset(bad)
    bad.write_text("name: bad\nbackbone:\n  source: config\n  layers: 3\n")
    with pytest.raises(ToolchainError, match=r"unknown field\(s\) \['layers'\]"):
        load_preset(bad)


def test_model_dir_without_config(tmp_path):
    with pytest.raises(ToolchainError, match="no config.json"):
        load_backbone(BackboneSpec(source="hf_dir", path=str(tmp_path)))
    with pytest.raises(ToolchainError, match="does not exist"):
        load_backbone(BackboneSpec(source="hf_dir", path=str(tmp_path / "missing")))


def test_cli_help_lists_stages_and_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "train -> merge -> export" in result.output
    for command in ("ls", "heads", "embed", "assets", "validate", "train", "merge", "export",
                    "verify", "bench", "compare", "data", "plan"):
        assert command in result.output


def test_cli_errors_are_one_line():
    result = CliRunner().invoke(main, ["embed", "--variant", "m9", "hi"])
    assert result.exit_code == 2
    assert "error: unknown variant 'm9'" in result.output
    result = CliRunner().invoke(main, ["embed", "--variant", "m1", "--empty", "refuse", "ok", ""])
    assert result.exit_code == 2 and "text 1 is empty (empty_texts='refuse')" in result.output
    result = CliRunner().invoke(main, ["embed", "--variant", "m1", "ok", ""])
    assert result.exit_code == 0 and "(2, 64)" in result.output


def test_cli_heads_and_embed():
    result = CliRunner().invoke(main, ["heads", "--shape", "mistral-7b"])
    assert result.exit_code == 0 and "1278.4M" in result.output
    result = CliRunner().invoke(main, ["embed", "--variant", "m5", "hello", "world"])
    assert result.exit_code == 0, result.output
    assert "(2, 64)" in result.output


def test_cli_init_writes_an_untrained_model_dir_with_the_chosen_head(tmp_path):
    from toolchain.modeling import load_embedding_model
    from toolchain.modeling.pooling import HeadConfig, head_parameter_count

    out = tmp_path / "m5-paper"
    result = CliRunner().invoke(main, ["init", "--preset", "tiny-mistral", "--variant", "m5",
                                       "--head-size", "paper", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = load_embedding_model(out)
    paper = HeadConfig.from_size("paper", pooling="multi_layer_trainable",
                                 attention="bidirectional", hidden_size=64, num_layers=4)
    assert sum(p.numel() for p in model.head.parameters()) == head_parameter_count(paper)
    assert model.variant.name == "m5" and model.head_config.n_latents == 768
    vectors = model.encode(["a text", "another text"])
    assert torch.allclose(vectors.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_a_config_preset_may_not_set_what_the_tokenizer_sets(tmp_path):
    import yaml

    from toolchain.presets import preset_dir

    data = yaml.safe_load((preset_dir() / "tiny-mistral.yaml").read_text())
    data["backbone"]["config"]["vocab_size"] = 1000
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ToolchainError, match=r"backbone.config.vocab_size: set from the tokenizer"):
        load_preset(path)
