"""Who is asking, and what they may do: principals, roles, password hashes and the users file.

The dashboard signs people in (``dashboard.auth`` in ``mlops.yaml``) and hands a
:class:`Principal` to :mod:`mlops_core.ops.actions`, which checks it at the moment of every write,
so
hiding a button is a convenience, never the protection.

- ``none``: local use only; everyone is an approver (:func:`local_principal`).
- ``password``: users, scrypt password hashes and roles in a YAML file kept outside the
  repository, mode 0600 (``mlops users add``; :func:`login`).
- ``oidc``: Streamlit's ``st.login``; the signed-in email is the name, and those listed in
  ``dashboard.approvers`` are approvers (:func:`oidc_principal`).

Nothing here reads the environment or touches Streamlit.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from mlops_core.config import Settings
from mlops_core.errors import AuthorizationError, ConfigError, InputError

log = logging.getLogger(__name__)

ROLES = ("viewer", "approver")
VIAS = ("none", "password", "oidc", "cli")
ACTIONS = ("approve", "reject", "rollback", "release", "withdraw", "request_retrain")
# the role each write needs; reading needs none beyond being signed in
REQUIRED_ROLE = {action: "approver" for action in ACTIONS}

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,199}$")
MIN_PASSWORD = 8

# scrypt: n = 2**15, r = 8 (32 MiB, about 0.1 s a hash); the parameters are stored with each
# hash, so raising them later leaves existing hashes valid
SCRYPT_LN, SCRYPT_R, SCRYPT_P = 15, 8, 1
_MAX_LN, _MAX_R, _MAX_P = 20, 16, 4  # a stored hash asking for more is refused (memory, time)
_SCHEME = "scrypt"


@dataclass(frozen=True)
class Principal:
    """Someone acting: their name (recorded in the audit log), role, and how they signed in."""

    name: str
    role: str  # viewer | approver
    via: str  # none | password | oidc | cli

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise InputError("a principal needs a name")
        if self.role not in ROLES:
            raise InputError(f"unknown role '{self.role}'; roles: {', '.join(ROLES)}")
        if self.via not in VIAS:
            raise InputError(f"unknown sign-in '{self.via}'; one of {', '.join(VIAS)}")

    def can(self, action: str) -> bool:
        if action not in REQUIRED_ROLE:
            raise InputError(f"unknown action '{action}'; actions: {', '.join(ACTIONS)}")
        return ROLES.index(self.role) >= ROLES.index(REQUIRED_ROLE[action])


def authorize(principal: Principal, action: str) -> None:
    """Raise :class:`AuthorizationError` unless ``principal`` may do ``action``."""
    if not principal.can(action):
        raise AuthorizationError(
            f"{principal.name} ({principal.role}) may not {action.replace('_', ' ')}: "
            f"it needs the {REQUIRED_ROLE[action]} role"
        )


def local_principal(name: str) -> Principal:
    """``dashboard.auth: none``: whoever runs the dashboard locally, as an approver."""
    return Principal(name=name, role="approver", via="none")


# passwords ---------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, ln: int, r: int, p: int) -> bytes:
    n = 1 << ln
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        dklen=32,
        maxmem=2 * 128 * r * n * p + (1 << 20),
    )


def hash_password(password: str) -> str:
    """A salted scrypt hash that names its parameters: ``scrypt$ln=15,r=8,p=1$SALT$HASH``."""
    if not isinstance(password, str) or not password:
        raise InputError("a password cannot be empty")
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_LN, SCRYPT_R, SCRYPT_P)
    return f"{_SCHEME}$ln={SCRYPT_LN},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    try:
        scheme, params, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return None
        kv = dict(item.split("=", 1) for item in params.split(","))
        ln, r, p = int(kv["ln"]), int(kv["r"]), int(kv["p"])
        if not (1 <= ln <= _MAX_LN and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
            return None
        return (
            ln,
            r,
            p,
            base64.b64decode(salt, validate=True),
            base64.b64decode(digest, validate=True),
        )
    except (ValueError, KeyError, AttributeError):
        return None


def verify_password(stored: str, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (compared in constant time). A malformed stored
    hash matches nothing."""
    parsed = _parse(stored)
    if parsed is None or not isinstance(password, str):
        return False
    ln, r, p, salt, digest = parsed
    return hmac.compare_digest(_scrypt(password, salt, ln, r, p), digest)


_DUMMY: list[str] = []


def _dummy_hash() -> str:
    """A hash to check against when the user does not exist, so that an unknown name takes as
    long to refuse as a wrong password."""
    if not _DUMMY:
        _DUMMY.append(hash_password(secrets.token_urlsafe(16)))
    return _DUMMY[0]


# the users file ----------------------------------------------------------------------------
@dataclass(frozen=True)
class User:
    name: str
    password_hash: str
    role: str

    def to_dict(self) -> dict[str, str]:  # never the hash
        return {"name": self.name, "role": self.role}


def git_root(path: Path) -> Path | None:
    """The work tree ``path`` lies in (the nearest folder holding ``.git``), if any."""
    for folder in [path, *path.parents]:
        if (folder / ".git").exists():
            return folder
    return None


def check_outside_repository(users_file: Path, base_dir: Path) -> Path:
    """``users_file``, resolved; a :class:`ConfigError` if it lies in the project's repository
    (the work tree of ``base_dir``), where password hashes could be committed."""
    path = Path(users_file).expanduser().resolve()
    root = git_root(Path(base_dir).resolve())
    if root is not None and path.is_relative_to(root):
        raise ConfigError(
            f"the users file {path} lies inside the repository {root}: keep it "
            "outside (default ~/.config/mlops/<project>/users.yaml), where password "
            "hashes cannot be committed"
        )
    return path


def users_path(settings: Settings) -> Path:
    """``dashboard.users_file`` (relative to the config's folder), or
    ``~/.config/mlops/<project>/users.yaml``; never inside the project's repository."""
    configured = settings.dashboard.users_file
    path = (
        settings.resolve(configured)
        if configured is not None
        else (Path.home() / ".config" / "mlops" / settings.project / "users.yaml")
    )
    return check_outside_repository(path, settings.base_dir)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not USER_NAME.match(name):
        raise InputError(
            f"'{name}' is not a valid user name: letters, digits and _ . @ + - "
            "(starting with a letter or digit)"
        )
    return name


def load_users(path: Path) -> dict[str, User]:
    """The users in ``path`` by name (none if the file does not exist). Raises
    :class:`ConfigError` for a file that is not a users file."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the users file: {e}") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        log.warning("%s can be read by other users of this machine: chmod 600 it", path)
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    entries = raw.get("users") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise ConfigError(f"{path}: expected a mapping 'users: {{name: {{role, password_hash}}}}'")
    users = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("password_hash"), str):
            raise ConfigError(f"{path}: user '{name}' needs a password_hash")
        role = entry.get("role")
        if role not in ROLES:
            raise ConfigError(f"{path}: user '{name}' has role {role!r}; roles: {', '.join(ROLES)}")
        users[str(name)] = User(str(name), entry["password_hash"], role)
    return users


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path`` (POSIX), so two `mlops users add` do not lose one."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


HEADER = (
    "# Dashboard users of mlops: scrypt password hashes, never passwords. Managed with\n"
    "# `mlops users add`. Keep this file outside the repository, readable by you only.\n"
)


def add_user(path: Path, name: str, password: str, role: str) -> None:
    """Create or update ``name`` in the users file at ``path`` (created, mode 0600, in a folder
    of mode 0700). The file is replaced atomically: a reader sees the old or the new one."""
    _check_name(name)
    if role not in ROLES:
        raise InputError(f"unknown role '{role}'; roles: {', '.join(ROLES)}")
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InputError(f"a password needs at least {MIN_PASSWORD} characters")
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    hashed = hash_password(password)
    with _locked(path):
        users = load_users(path)
        users[name] = User(name, hashed, role)
        doc = {
            "users": {
                u.name: {"role": u.role, "password_hash": u.password_hash}
                for u in sorted(users.values(), key=lambda u: u.name)
            }
        }
        text = HEADER + yaml.safe_dump(doc, sort_keys=False)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:  # mkstemp creates the file 0600
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# signing in ----------------------------------------------------------------------------------
def _require_mode(settings: Settings, mode: str) -> None:
    if settings.dashboard.auth != mode:
        raise ConfigError(f"dashboard.auth is '{settings.dashboard.auth}', not '{mode}'")


def login(settings: Settings, username: str, password: str) -> Principal | None:
    """``dashboard.auth: password``: the principal for a right name and password, else None
    (an unknown name and a wrong password are told apart neither by answer nor by time).
    Raises :class:`ConfigError` when there is no users file to check against."""
    _require_mode(settings, "password")
    path = users_path(settings)
    users = load_users(path)
    if not users:
        raise ConfigError(
            f"no dashboard users in {path}: add one with `mlops users add NAME --role approver`"
        )
    user = users.get(username) if isinstance(username, str) else None
    ok = verify_password(user.password_hash if user else _dummy_hash(), password)
    if user is None or not ok:
        log.info("failed sign-in for %r", username)
        return None
    return Principal(name=user.name, role=user.role, via="password")


def oidc_principal(settings: Settings, user: Mapping[str, Any]) -> Principal | None:
    """``dashboard.auth: oidc``: the principal of Streamlit's ``st.user`` (or any mapping like
    it); None unless signed in. The name is the email; listed in ``dashboard.approvers``
    (compared without case) makes an approver, unless the provider says the email is not
    verified; everyone else is a viewer."""
    _require_mode(settings, "oidc")
    if not user or not user.get("is_logged_in"):
        return None
    email = user.get("email")
    name = str(email or user.get("preferred_username") or user.get("sub") or "").strip()
    if not name:
        return None
    approvers = {a.casefold() for a in settings.dashboard.approvers}
    verified = user.get("email_verified") is not False
    role = "approver" if name.casefold() in approvers and (verified or not email) else "viewer"
    return Principal(name=name, role=role, via="oidc")


def current_principal(settings: Settings, principal: Principal) -> Principal:
    """``principal`` with the role it has now, read again from where roles live: the users file
    (``password``) or ``dashboard.approvers`` (``oidc``). A role is checked at the moment of
    each write with this, never only at sign-in: an approver demoted or removed since signing in
    acts as a viewer. ``none`` and ``cli`` principals, and any signed in under another
    ``dashboard.auth`` than the one configured now (the dashboard signs those in again), are
    taken as they are."""
    mode = settings.dashboard.auth
    if principal.via != mode or mode not in ("password", "oidc"):
        return principal
    if mode == "password":
        try:
            user = load_users(users_path(settings)).get(principal.name)
        except (ConfigError, OSError) as e:  # no users file to check: no write may pass
            log.warning("cannot re-read the role of %s: %s", principal.name, e)
            user = None
        role = user.role if user is not None else "viewer"
    else:  # oidc
        approvers = {a.casefold() for a in settings.dashboard.approvers}
        role = principal.role if principal.name.casefold() in approvers else "viewer"
    if role != principal.role:
        log.info("%s is %s now (was %s at sign-in)", principal.name, role, principal.role)
    return replace(principal, role=role)
