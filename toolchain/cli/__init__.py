"""`poolattn`: a thin click layer over the library. One file per command group."""

from __future__ import annotations

import sys

import click

from toolchain.errors import ToolchainError


class ToolchainGroup(click.Group):
    """Prints ToolchainError as one clear line (exit 2) instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ToolchainError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)


@click.group(cls=ToolchainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="poolattn-toolchain")
def main() -> None:
    """Train, export and benchmark LLM-based embedding models (Tang & Yang 2024 variants).

    \b
    Stages: train -> merge -> export -> verify -> bench -> compare.
    Runs live under runs/<preset>/<variant>/; artifacts are directories with manifest.json.
    """


# Each module lists its click commands in COMMANDS; one module per stage.
COMMAND_MODULES = ("core", "data", "train", "export", "bench", "baseline", "plan", "serve")


def _register() -> None:
    import importlib
    import importlib.util

    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"toolchain.cli.{name}") is None:
            continue  # stage not present in this checkout
        for command in importlib.import_module(f"toolchain.cli.{name}").COMMANDS:
            main.add_command(command)


_register()
