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


def test_eos_in_text_is_not_doubled(hf_tokenizer):
    tok = TextTokenizer(hf_tokenizer, max_length=64)
    ids = tok.token_ids("hello " + hf_tokenizer.eos_token)
    assert ids[-1] == tok.eos_token_id and ids[-2] != tok.eos_token_id


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
