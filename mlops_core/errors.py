"""Our exceptions, in one place.

Each inherits from the builtin it resembles (as scikit-learn's exceptions do), so a caller's
``except ValueError`` still works. Bad *data* is not an exception: validation returns a report.
"""

from __future__ import annotations


class MlopsError(Exception):
    """Base class of every error raised on purpose by mlops_core."""


class ConfigError(MlopsError, ValueError):
    """The configuration file is missing, unreadable, or does not match the schema."""


class SourceError(MlopsError, OSError):
    """A source could not be read at all (unreachable server, missing file, bad query)."""


class FileNotReady(SourceError):
    """A file changed (grew, shrank, was replaced) while it was read: it is still being
    written. Nothing of it is kept and it is not marked seen: the next run reads it again."""


class FileRejected(MlopsError, ValueError):
    """A file cannot be turned into rows: empty, corrupt, wrong encoding, too large...

    ``rule`` names the validation rule so that the file is quarantined with a reason a person
    can act on; the file itself is kept whole.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


class NotFoundError(MlopsError, LookupError):
    """A batch, quarantine record or other stored object does not exist."""


class InputError(MlopsError, ValueError):
    """A request is incomplete or malformed: a decision without a comment, a bad user name or
    role, a password that is too short."""


class AuthorizationError(MlopsError, PermissionError):
    """A write was refused to the person asking: a role they lack, or the four-eyes rule (the
    approver requested the retrain). Raised at the moment of the write, and audited."""


class ServiceUnavailable(MlopsError, ConnectionError):
    """A service the operation needs (the MLflow tracking server) does not answer."""


class ClusterError(MlopsError, RuntimeError):
    """The Dask cluster could not finish the work: a worker died (out of memory, most often)
    or the scheduler went away. Nothing was registered."""


class RegistryError(MlopsError, RuntimeError):
    """A registry operation failed or was refused: a wrong status, a failed gate, a package
    that no longer matches its hash, or an error MLflow answered. MLflow's own exceptions never
    leave :mod:`mlops_core.registry.mlflow_adapter`."""


class RegistryUnavailable(RegistryError, ServiceUnavailable):
    """The model registry (the MLflow tracking server) does not answer, or answered with a
    temporary failure: worth retrying later, unlike a :class:`RegistryError`."""


class ProjectMissing(MlopsError, FileNotFoundError):
    """The project's workspace or metadata DB is not there: never created here, or moved or
    deleted. Only ``mlops init`` and ``mlops up`` create them; nothing else recreates them
    silently (that would start a new, empty audit history)."""


EXCERPT_CHARS = 60  # characters of a row or value quoted in a message


def excerpt(text: object, limit: int = EXCERPT_CHARS) -> str:
    """At most ``limit`` characters of ``text`` for a message (a finding never quotes a
    whole value: it may be huge, or private)."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} chars)"
