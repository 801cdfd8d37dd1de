"""Model directories: attention mode and head weights survive save/load; tampering is refused."""

import json

import pytest
import torch

from toolchain.errors import ToolchainError
from toolchain.modeling import build_embedding_model, load_embedding_model, save_embedding_model


@pytest.mark.parametrize("variant", ["m1", "m3", "m4", "m5"])
def test_roundtrip_keeps_mode_and_weights(tmp_path, variant, texts):
    model = build_embedding_model("tiny-qwen2", variant, head_seed=7)
    with torch.no_grad():  # make the head differ from any fresh initialisation
        for p in model.head.parameters():
            p.add_(0.01)
    manifest = save_embedding_model(model, tmp_path / "m")
    assert manifest["attention"] == model.variant.attention
    assert all(len(h) == 64 for h in manifest["files"].values())
    config = json.loads((tmp_path / "m/backbone/config.json").read_text())
    assert config["is_causal"] == (model.variant.attention == "causal")
    loaded = load_embedding_model(tmp_path / "m")
    assert loaded.variant.attention == model.variant.attention
    for (name, a), (_, b) in zip(model.head.state_dict().items(), loaded.head.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(loaded.encode(texts), model.encode(texts), rtol=0, atol=1e-6)
    assert not list(tmp_path.glob(".m.tmp-*")), "temp dir left behind"


def test_tampered_file_is_refused(tmp_path):
    save_embedding_model(build_embedding_model("tiny-mistral", "m2"), tmp_path / "m")
    weights = tmp_path / "m/pooling/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ToolchainError, match="sha256 differs"):
        load_embedding_model(tmp_path / "m")


def test_attention_mode_is_checked_at_load(tmp_path):
    """Flip is_causal in the saved config (and re-hash): the manifest disagrees -> refused."""
    from toolchain.atomic import read_manifest, write_manifest

    save_embedding_model(build_embedding_model("tiny-mistral", "m5"), tmp_path / "m")
    config_path = tmp_path / "m/backbone/config.json"
    config = json.loads(config_path.read_text())
    config["is_causal"] = True
    config_path.write_text(json.dumps(config))
    manifest = read_manifest(tmp_path / "m", verify=False)
    manifest.pop("files")
    write_manifest(tmp_path / "m", manifest)
    with pytest.raises(ToolchainError, match="is_causal says causal, manifest says bidirectional"):
        load_embedding_model(tmp_path / "m")


def test_failed_save_leaves_nothing(tmp_path):
    model = build_embedding_model("tiny-mistral", "m1")
    model.head.config = None  # breaks save_head midway
    with pytest.raises(AttributeError):
        save_embedding_model(model, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
