"""Bad input gets a clear error; presets load; the CLI's help and errors."""

import pytest
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
