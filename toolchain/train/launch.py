"""Process launch: one process without a launcher, several under torchrun or the deepspeed
launcher (multi-node: ds_configs/README.md).

The per-rank entry point the launchers start is ``python -m toolchain.cli.train_rank <poolattn
train options>`` (RANK_ENTRY_MODULE); ``poolattn train --nproc N`` starts torchrun on it for you.
This module names it but never imports the CLI (the CLI imports this module).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings

import torch

RANK_ENTRY_MODULE = "toolchain.cli.train_rank"


def quiet_warnings() -> None:
    """Silence per-call deprecation notices of collectives DeepSpeed and the loss use (one line
    per reduce otherwise floods the log); everything else still warns."""
    for pattern in (r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated",
                    r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
                    r"`is_gradient_checkpointing` is deprecated"):
        warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_single_process_env() -> None:
    """DeepSpeed needs the launcher's variables even for one process: set the missing ones."""
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("RANK", "0"), ("WORLD_SIZE", "1"),
                       ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)


def launched_world_size() -> int:
    """World size announced by a launcher (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed() -> tuple[int, int, torch.device]:
    """Initialise torch.distributed through DeepSpeed: gloo on CPU, nccl on GPU.

    Returns:
        (rank, world_size, device).
    """
    import deepspeed
    import torch.distributed as dist

    ensure_single_process_env()
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    if not on_gpu and dist.get_world_size() > 1:
        torch.set_num_threads(1)  # ranks share the cores (the deepspeed launcher leaves OMP unset)
    return dist.get_rank(), dist.get_world_size(), device


def torchrun_command(args: list[str], nproc: int) -> list[str]:
    """torchrun (standalone rendezvous, free port) on the per-rank entry point with ``args``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", RANK_ENTRY_MODULE, *args]


def relaunch(args: list[str], nproc: int) -> int:
    """Run ``nproc`` ranks under torchrun and wait; returns the launcher's exit status.

    On CPU each rank gets one thread (OMP_NUM_THREADS=1): ranks share the cores, and
    2 ranks x 2 threads on 2 cores ran 2.4x slower.
    """
    env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    if not torch.cuda.is_available():
        env["OMP_NUM_THREADS"] = "1"
    return subprocess.call(torchrun_command(args, nproc), env=env)


if __name__ == "__main__":  # the entry point of earlier releases: say where it went, do nothing
    sys.exit(f"error: the per-rank entry point is now `-m {RANK_ENTRY_MODULE}` (same options)")
