"""Length-grouped forward chunks: fewer padded positions, few shapes, every text once, and the
embeddings back in the batch's order equal the one-padded-batch embeddings."""

from __future__ import annotations

import random

import pytest
import torch

from toolchain.modeling import build_embedding_model
from toolchain.train.buckets import WIDTH_MULTIPLE, step_chunks


@pytest.fixture(scope="module")
def model():
    return build_embedding_model("tiny-mistral", "m5", verify=False).eval()


def _texts(seed: int, count: int = 48) -> list[str]:
    rng = random.Random(seed)
    words = "river apple castle winter tiger coffee stone cloud paper music".split()
    return [" ".join(rng.choices(words, k=rng.choice([rng.randint(1, 4), rng.randint(10, 40)])))
            for _ in range(count)]


@pytest.mark.parametrize("seed", range(3))
def test_chunks_hold_every_text_once_in_few_shapes(model, seed):
    texts = _texts(seed)
    grouped = step_chunks(model.tokenizer, texts, rows_per_chunk=8)
    plain = step_chunks(model.tokenizer, texts, rows_per_chunk=None, group_by_length=False)
    assert sorted(grouped.order) == list(range(len(texts))) and len(grouped.chunks) == 6
    assert grouped.real_tokens == plain.real_tokens
    assert grouped.padding_fraction < 0.5 * plain.padding_fraction
    for chunk in grouped.chunks:
        width = chunk["input_ids"].shape[1]
        assert chunk["input_ids"].shape[0] == 8
        assert width % WIDTH_MULTIPLE == 0 or width == model.tokenizer.max_length
        assert chunk["attention_mask"].sum(1).max() > width - WIDTH_MULTIPLE  # no wider than needed


def test_without_grouping_texts_keep_their_order(model):
    texts = _texts(0, count=10)
    chunked = step_chunks(model.tokenizer, texts, rows_per_chunk=4, group_by_length=False)
    assert chunked.order == list(range(10)) and [len(c["input_ids"]) for c in chunked.chunks] == [4, 4, 2]


TEXTS = ["a", "the quick brown fox jumps over the lazy dog " * 3, "winter", "river apple castle",
         "tea", "one two three four five six seven eight nine ten", "x y", "castle"]


@pytest.mark.parametrize("rows", [3, 5])
def test_grouped_chunks_embed_like_one_padded_batch(model, rows):
    grouped = step_chunks(model.tokenizer, TEXTS, rows_per_chunk=rows)
    plain = step_chunks(model.tokenizer, TEXTS, rows_per_chunk=None, group_by_length=False)
    assert len(plain.chunks) == 1 and plain.order == list(range(len(TEXTS)))
    with torch.no_grad():
        reference = model(**plain.chunks[0])
        rows_out = torch.cat([model(**chunk) for chunk in grouped.chunks])
    assert not torch.allclose(rows_out, reference, atol=1e-3)  # chunk order is not batch order
    assert torch.allclose(grouped.restore(rows_out), reference, atol=1e-5)


def test_pad_refuses_a_width_shorter_than_a_row(model):
    from toolchain.errors import ToolchainError

    with pytest.raises(ToolchainError, match="shorter than the longest row"):
        model.tokenizer.pad([[5, 6, 7]], width=2)
