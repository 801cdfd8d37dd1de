"""Per-rank entry point for launchers, with the options of `poolattn train`::

    torchrun --nproc_per_node 8 -m toolchain.cli.train_rank --preset mistral-7b --variant m5
    deepspeed --num_gpus 8 --module toolchain.cli.train_rank --preset mistral-7b --variant m5

``poolattn train --nproc N`` starts torchrun on it for you. A module of its own rather than a
``__main__`` block in toolchain.cli.train: importing the toolchain.cli package imports the command
modules, and running one of them with ``-m`` then warns (runpy) in every rank.
"""

from __future__ import annotations

import sys

import click

from toolchain.cli.train import train_command
from toolchain.errors import ToolchainError


def main(argv: list[str] | None = None) -> None:
    """Run `poolattn train` with ``argv``; a ToolchainError is printed as one line (exit 2)."""
    try:
        train_command.main(args=argv if argv is not None else sys.argv[1:], standalone_mode=False)
    except ToolchainError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """The rank's process group ends with the rank: left alive into interpreter shutdown, gloo's
    threads were once torn down joinable and aborted a finished rank ("terminate called without
    an active exception", SIGABRT after its last step: a fresh clone's make test, 2026-12-04)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
