"""GradCache (Gao et al. 2021): a large contrastive batch within a small activation budget.

1. ``embed_without_graph``: embed every chunk under no_grad, remembering each chunk's RNG state.
2. The loss runs on the cached embeddings (made leaves); its backward yields d loss / d embedding.
3. ``backward_from_cache``: re-forward each chunk WITH graph under the replayed RNG state (LoRA
   dropout draws the same masks) and back-propagate <embedding, cached gradient>.

Under DeepSpeed each re-forward is one managed micro-step (the caller calls ``engine.backward``
and ``engine.step``): the engine then accumulates the chunks' gradients and reduces them once at
the boundary, instead of the double reduction that breaks the known GradCache + DeepSpeed setups.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch

Chunk = dict[str, torch.Tensor]
EmbedFn = Callable[[Chunk], torch.Tensor]


class RngState:
    """Snapshot of the CPU and (if used) current CUDA generator, replayable later."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block with the snapshot's RNG; the outer RNG stream is left untouched."""
        devices = [torch.cuda.current_device()] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda)
            yield


def embed_without_graph(embed: EmbedFn, chunks: Sequence[Chunk]) -> tuple[torch.Tensor, list[RngState]]:
    """Embed every chunk without autograd -> ((N, H) float32, one RngState per chunk)."""
    states, outputs = [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(RngState())
            outputs.append(embed(chunk).float())
    return torch.cat(outputs), states


def backward_from_cache(embed: EmbedFn, chunks: Sequence[Chunk], states: Sequence[RngState],
                        grads: torch.Tensor, backward: Callable[[torch.Tensor, bool], None]) -> None:
    """Re-forward each chunk under its recorded RNG and back-propagate the cached gradient.

    Args:
        embed: the same embedding function as in the first pass.
        chunks, states: from ``embed_without_graph``.
        grads: (N, H) d loss / d embedding, rows in chunk order.
        backward: called as ``backward(surrogate, is_last_chunk)``; runs the backward pass
            (e.g. ``engine.backward``) of the scalar surrogate <embedding, gradient>.
    """
    offset = 0
    for index, (chunk, state) in enumerate(zip(chunks, states)):
        with state.replay():
            emb = embed(chunk).float()  # (n, H)
        cached = grads[offset:offset + emb.shape[0]].to(emb.device)
        offset += emb.shape[0]
        backward(torch.sum(emb * cached), index == len(chunks) - 1)
    if offset != grads.shape[0]:
        raise ValueError(f"cached gradient has {grads.shape[0]} rows, chunks gave {offset}")
