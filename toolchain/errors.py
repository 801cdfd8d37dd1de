"""One exception type for every user-facing error, so the CLI can print it without a traceback."""


class ToolchainError(ValueError):
    """Bad input or a failed check. The message names the file, line and field where known."""
