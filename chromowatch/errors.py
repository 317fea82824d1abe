"""The exception tree: each error carries an exit code and a message that says what to do.

Only the CLI turns these into exit codes; library code raises them and never exits.
"""

from __future__ import annotations


class ChromowatchError(Exception):
    """Base of every error a user can act on."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  -> {self.hint}" if self.hint else self.message


class ConfigError(ChromowatchError):
    """Invalid configuration: a wrong key or value, a missing or unreadable file."""

    exit_code = 2


class UsageError(ChromowatchError):
    """The command line asks for something that cannot be done as asked."""

    exit_code = 2


class InputImageError(ChromowatchError):
    """One input file is not a usable image; the file is skipped, nothing else is affected."""

    exit_code = 3

    def __init__(self, path: str, problem: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"{path}: {problem}",
            hint=hint or "check or re-export this file; the other files are not affected",
        )
        self.path = path
        self.problem = problem


class ModelError(ChromowatchError):
    """A model bundle or ensemble is missing, corrupt, or does not match what is expected."""

    exit_code = 4


class StoreError(ChromowatchError):
    """The database cannot be opened, migrated or written."""

    exit_code = 5


class ReportError(ChromowatchError):
    """A report cannot be built or rendered (missing sample, renderer failure or timeout)."""

    exit_code = 6


class MailError(ChromowatchError):
    """Mail cannot be sent as configured; the report stays in the outbox."""

    exit_code = 7
