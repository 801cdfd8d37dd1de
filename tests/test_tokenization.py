"""The EOS and padding contract with the real Mistral v1 and SmolLM2 tokenizers."""

import pytest

from toolchain.errors import ToolchainError
from toolchain.modeling.backbone import _load_tokenizer
from toolchain.tokenization import TextTokenizer


@pytest.fixture(scope="module", params=["mistral-v1-tokenizer", "smollm2-tokenizer"])
def hf_tokenizer(request):
    return _load_tokenizer(request.param)


@pytest.mark.parametrize("max_length", [4, 9, 512])
def test_eos_once_at_end_after_truncation(hf_tokenizer, max_length):
    tok = TextTokenizer(hf_tokenizer, max_length=max_length)
    long_text = "one two three four five six seven eight nine ten eleven twelve " * 3
    for text in ["hello", long_text]:
        ids = tok.token_ids(text)
        assert ids[-1] == tok.eos_token_id
        assert ids.count(tok.eos_token_id) == 1
        assert len(ids) <= max_length
    assert len(tok.token_ids(long_text)) == max_length if max_length < 20 else True


def test_eos_in_text_is_a_token_of_the_text(hf_tokenizer):
    """A literal EOS string is part of the text; the contract's EOS still closes it (the
    contract is tokenizer.json, which cannot strip a trailing EOS, so neither does training)."""
    tok = TextTokenizer(hf_tokenizer, max_length=64)
    plain = tok.token_ids("hello")
    ids = tok.token_ids("hello" + hf_tokenizer.eos_token)
    assert ids == plain[:-1] + [tok.eos_token_id, tok.eos_token_id]


def test_same_ids_as_the_backbone_tokenizer_plus_eos(hf_tokenizer):
    """The contract tokenizer is the backbone's own tokenizer, its leading special tokens kept,
    EOS appended, truncation keeping EOS: nothing else changes."""
    from toolchain.probe_texts import PROBE_TEXTS

    for max_length in (5, 64):
        tok = TextTokenizer(hf_tokenizer, max_length=max_length)
        for text in PROBE_TEXTS + ["", "日本語 😀"]:
            ids = list(hf_tokenizer(text, add_special_tokens=True)["input_ids"])
            assert tok.token_ids(text) == ids[: max_length - 1] + [tok.eos_token_id], text


@pytest.mark.parametrize("side", ["left", "right"])
def test_saved_tokenizer_json_is_the_whole_contract(hf_tokenizer, side, tmp_path):
    """Plain tokenizers on the saved file (what any consumer runs) gives the very batch the
    toolchain feeds the graph, and the transformers loader reads max length and side."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok = TextTokenizer(hf_tokenizer, max_length=12, padding_side=side)
    assert set(tok.save(tmp_path)) == {"tokenizer.json", "tokenizer_config.json",
                                       "special_tokens_map.json"}
    texts = ["", "short", "a text far longer than twelve tokens, " * 5, "end" + hf_tokenizer.eos_token]
    ours = tok(texts)
    plain = Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode_batch(texts)
    assert [e.ids for e in plain] == ours["input_ids"].tolist()
    assert [e.attention_mask for e in plain] == ours["attention_mask"].tolist()
    reopened = TextTokenizer.from_file(tmp_path / "tokenizer.json")
    assert (reopened.max_length, reopened.padding_side, reopened.eos_token_id,
            reopened.pad_token_id) == (12, side, tok.eos_token_id, tok.pad_token_id)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path))
    assert (loaded.model_max_length, loaded.padding_side) == (12, side)
    assert loaded(texts, padding=True, truncation=True)["input_ids"] == ours["input_ids"].tolist()


def test_a_file_without_the_contract_is_refused(tmp_path):
    from toolchain.assets import fetch_asset

    plain = fetch_asset("smollm2-tokenizer") / "tokenizer.json"
    with pytest.raises(ToolchainError, match="not a contract tokenizer"):
        TextTokenizer.from_file(plain)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ToolchainError, match="cannot read tokenizer"):
        TextTokenizer.from_file(tmp_path / "tokenizer.json")


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_side_and_mask(hf_tokenizer, side):
    tok = TextTokenizer(hf_tokenizer, max_length=32, padding_side=side)
    batch = tok(["a", "a much longer text with many more tokens in it"])
    mask = batch["attention_mask"]
    assert mask[1].all()
    short = mask[0]
    real = int(short.sum())
    if side == "left":
        assert short[-real:].all() and not short[:-real].any()
        assert batch["input_ids"][0, -1] == tok.eos_token_id
    else:
        assert short[:real].all() and not short[real:].any()
        assert batch["input_ids"][0, real - 1] == tok.eos_token_id


def test_bad_inputs_are_named(hf_tokenizer):
    tok = TextTokenizer(hf_tokenizer, max_length=16)
    with pytest.raises(ToolchainError, match="empty text list"):
        tok([])
    refusing = TextTokenizer(hf_tokenizer, max_length=16, empty_texts="refuse")
    with pytest.raises(ToolchainError, match="text 1 is empty"):
        refusing(["fine", ""])
    with pytest.raises(ToolchainError, match="text 0: expected a string"):
        tok([3])
    with pytest.raises(ToolchainError, match="text 1: expected a string, got NoneType"):
        tok(["fine", None])
    with pytest.raises(ToolchainError, match="single string"):
        tok("not a list")
    with pytest.raises(ToolchainError, match="padding_side"):
        TextTokenizer(hf_tokenizer, max_length=16, padding_side="middle")


def test_empty_text_embeds_as_the_eos_only_sequence(hf_tokenizer):
    """Policy: "" becomes [BOS] EOS, as sentence-transformers embeds "" as [CLS] [SEP]."""
    tok = TextTokenizer(hf_tokenizer, max_length=16, padding_side="right")
    ids = tok.token_ids("")
    assert ids[-1] == tok.eos_token_id
    assert ids[:-1] in ([], [tok.bos_token_id])
    batch = tok(["a real text", ""])
    assert batch["attention_mask"][1].sum() == len(ids)
