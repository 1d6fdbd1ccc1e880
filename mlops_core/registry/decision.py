"""The promotion decision, pure: the facts read under the decision lock in, a refusal (with its
reason) or None out. No I/O: :class:`mlops_core.registry.registry.Registry` reads the facts,
calls these functions, and writes what they decide."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from mlops_core.registry.records import AuditRecord

# the audited actions that decide a version's fate once (a rollback re-decides the champion)
PAST = {
    "approve": "approved",
    "auto_promote": "promoted",
    "reject": "rejected",
    "gate_reject": "rejected by the gate",
    "supersede": "superseded",
}
DECISIONS = tuple(PAST)
# the actions that move the champion alias
MOVES_CHAMPION = ("approve", "rollback", "auto_promote")

Repeat = Literal["new", "same", "reused"]


def repeat_of(prior: AuditRecord | None, action: str, version: str, any_version: bool) -> Repeat:
    """Whether a request id is new, the same request again (a retry, a double click: a no-op)
    or reused for another action or version (refused). ``any_version``: the version was not
    chosen by the caller (a rollback to "the one before", which the first click changed)."""
    if prior is None:
        return "new"
    if prior.action != action or (prior.version != version and not any_version):
        return "reused"
    return "same"


def reused_message(request_id: str, prior: AuditRecord) -> str:
    return (
        f"request id {request_id} was already used for {prior.action} v{prior.version}; "
        "a new action needs a new request id"
    )


def handled_message(request_id: str, prior: AuditRecord) -> str:
    return f"request {request_id} was already handled ({prior.outcome}); nothing was changed"


def refusal(
    action: str,
    version: str,
    *,
    status: str,
    allowed: tuple[str, ...],
    package_problem: str | None,
    current: str | None,
    prior: AuditRecord | None,
) -> str | None:
    """Why ``action`` on ``version`` cannot apply, or None when it can (then the champion is
    set by compare-and-set, which may still refuse: :func:`changed_meanwhile`). Checked in
    order: the version's status, its package (``package_problem``, found by the caller for a
    move of the champion), the champion now, and a decision already applied to it."""
    if status not in allowed:
        return f"version {version} is {status}; {action} needs {' or '.join(allowed)}"
    if package_problem:
        return package_problem
    if version == current:
        if action == "reject":
            return f"version {version} is the champion; it cannot be rejected"
        return f"version {version} is already the champion; nothing was changed"
    if prior is not None:
        return (
            f"version {version} was already {PAST[prior.action]} (by "
            f"{prior.actor} at {prior.at:%Y-%m-%d %H:%M:%S} UTC); nothing was changed"
        )
    return None


def changed_meanwhile(expected: str | None, now: str | None) -> str:
    """The refusal of a compare-and-set that found another champion than ``expected``."""
    return (
        f"the champion changed while you decided: expected "
        f"{'v' + str(expected) if expected else 'none'}, now "
        f"{'v' + now if now else 'none'}; nothing was changed"
    )


def rollback_target(current: str | None, newest_first: Iterable[AuditRecord]) -> str | None:
    """The champion before ``current``: the one the latest applied move to it replaced."""
    for r in newest_first:
        if (
            r.outcome == "applied"
            and r.version == current
            and r.action in MOVES_CHAMPION
            and r.previous_champion
        ):
            return r.previous_champion
    return None
