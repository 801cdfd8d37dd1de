"""InfoNCE on cosine similarity with candidates gathered across ranks (with gradient).

Every rank scores its own queries against ALL ranks' positives and hard negatives. The gather
is ``torch.distributed.nn.functional.all_gather``, whose backward sums the other ranks' gradients
into each rank's own embeddings; with DeepSpeed averaging parameter gradients over ranks, the
result is the gradient of the mean loss over the global batch, as in one big process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world() -> tuple[int, int]:
    """(rank, world_size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (N, H) from every rank in rank order -> (world * N, H)."""
    _, size = world()
    if size == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(tensor.contiguous()), dim=0)


@dataclass
class ContrastiveOutput:
    loss: torch.Tensor  # scalar, mean over this rank's queries
    logits: torch.Tensor  # (B_local, C) with C = world * (B_local + B_local * k)


def info_nce(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
             temperature: float = 0.05) -> ContrastiveOutput:
    """InfoNCE of local queries against every rank's positives and hard negatives.

    Args:
        queries: (B, H) this rank's query embeddings.
        positives: (B, H) their positives (row i belongs to query i).
        negatives: (B * k, H) hard negatives, k >= 0 per query.
        temperature: divides the cosine similarities (0.05 = the paper's scale 20).

    Returns:
        ContrastiveOutput; the label of local query i is column ``rank * B + i``.
    """
    rank, _ = world()
    queries = F.normalize(queries.float(), dim=-1)
    candidates = [gather_with_grad(F.normalize(positives.float(), dim=-1))]  # (W*B, H)
    if negatives.shape[0]:
        candidates.append(gather_with_grad(F.normalize(negatives.float(), dim=-1)))  # (W*B*k, H)
    candidates = torch.cat(candidates, dim=0)
    logits = queries @ candidates.T / temperature  # (B, C)
    labels = torch.arange(queries.shape[0], device=queries.device) + rank * queries.shape[0]
    return ContrastiveOutput(F.cross_entropy(logits, labels), logits)


def global_mean(value: torch.Tensor) -> float:
    """Mean of a scalar over ranks (for logging; no gradient)."""
    _, size = world()
    value = value.detach().float().clone()
    if size > 1:
        dist.all_reduce(value)
        value /= size
    return float(value)
