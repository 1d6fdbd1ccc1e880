"""The mlops-ct dashboard (Streamlit): where analysts watch the champion, drift and the pipeline,
compare versions, and approve, reject or roll back.

    MLOPS_CONFIG=path/to/mlops.yaml streamlit run dashboard/app.py

The entry point reads ``MLOPS_CONFIG`` (default ``./mlops.yaml``) once, signs the person in per
``dashboard.auth`` (``none``: local use, shown as a warning; ``password``: the users file;
``oidc``: ``st.login``), then hands over to the pages. mlops_core checks the person's role at
every write; hiding a button is only a convenience.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from dashboard import common
from mlops_core.errors import MlopsError
from mlops_core.ops.actions import record_failed_sign_in
from mlops_core.ops.auth import (
    Principal,
    current_principal,
    load_users,
    local_principal,
    login,
    oidc_principal,
    users_path,
)
from mlops_core.store import open_project

st.set_page_config(layout="wide", page_title="mlops-ct dashboard", page_icon="📈")

HERE = Path(__file__).parent
CONFIG = os.environ.get("MLOPS_CONFIG", "mlops.yaml")
# a page waits seconds, not minutes, for an MLflow that is down (the defaults retry for ~2 min)
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def _load_project() -> None:
    if not Path(CONFIG).expanduser().is_file():
        st.title("mlops-ct dashboard")
        st.error(
            f"No project configuration at `{CONFIG}`. Start the dashboard with "
            "`MLOPS_CONFIG=path/to/mlops.yaml` (or from the project's folder), or create "
            "a project with `mlops init`."
        )
        st.stop()
    common.set_config(CONFIG)
    try:
        settings = common.settings()
    except MlopsError as e:
        st.title("mlops-ct dashboard")
        st.error(f"The project configuration cannot be read: {e}")
        st.stop()
    try:  # the dashboard never creates a project: a moved one must not come back empty
        open_project(settings.workspace, settings.db_url)
    except MlopsError as e:
        st.title("mlops-ct dashboard")
        st.error(str(e).replace("--config FILE", f"--config {CONFIG}"))
        st.stop()


def _sign_in_with_password(settings: object) -> None:
    st.title("Sign in")
    st.caption("Users and roles live in the users file (`mlops users add NAME --role ...`).")
    with st.form("login", border=True):
        user = st.text_input("User name", key="login_user")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Sign in", key="login_submit", type="primary")
    if submitted:
        try:
            principal = login(settings, user.strip(), password)  # type: ignore[arg-type]
        except MlopsError as e:
            st.error(str(e))
            return
        if principal is None:
            record_failed_sign_in(settings, user, meta=common.meta())  # type: ignore[arg-type]
            st.error("Wrong user name or password.")
            return
        st.session_state[common.PRINCIPAL_KEY] = principal
        st.rerun()


def _principal() -> Principal | None:
    """The person using the dashboard, per ``dashboard.auth``; None: not signed in (the sign-in
    form is shown)."""
    settings = common.settings()
    mode = settings.dashboard.auth
    if mode == "none":
        st.warning(
            "Sign-in is off (`dashboard.auth: none`): whoever reaches this address acts "
            "as an approver. Use it on this machine only; set `dashboard.auth` to "
            "`password` or `oidc` to share it.",
            icon="⚠️",
        )
        default = common.os_user()
        name = (
            st.sidebar.text_input(
                "Your name (kept in the audit log)", value=default, key="display_name"
            ).strip()
            or default
        )
        return local_principal(name)
    if mode == "password":
        current = st.session_state.get(common.PRINCIPAL_KEY)
        if isinstance(current, Principal) and current.via == "password":
            # the role as it is now (a demotion shows at once); removed from the users file:
            # signed out
            try:
                still_a_user = current.name in load_users(users_path(settings))
            except MlopsError as e:
                st.error(str(e))
                return None
            if still_a_user:
                return current_principal(settings, current)
            st.session_state.pop(common.PRINCIPAL_KEY, None)
        _sign_in_with_password(settings)
        return None
    # oidc
    if not st.user.is_logged_in:
        st.title("Sign in")
        try:
            ready = "auth" in st.secrets
        except FileNotFoundError:  # no secrets.toml at all
            ready = False
        if not ready:
            st.error(
                "`dashboard.auth: oidc` needs your identity provider in Streamlit's "
                "secrets: an `[auth]` section in `.streamlit/secrets.toml` with "
                "`redirect_uri` (…/oauth2callback), `cookie_secret`, `client_id`, "
                "`client_secret` and `server_metadata_url`."
            )
            return None
        st.info("Sign in with your organisation's account to use the dashboard.")
        st.button("Sign in", key="login_oidc", type="primary", on_click=st.login)
        return None
    principal = oidc_principal(settings, st.user.to_dict())
    if principal is None:
        st.error(
            "Your account has no name or email the dashboard can record; sign in with another one."
        )
        st.button("Sign out", key="logout", on_click=st.logout)
        return None
    return principal


def _sign_out() -> None:
    st.session_state.pop(common.PRINCIPAL_KEY, None)
    if common.settings().dashboard.auth == "oidc":
        st.logout()


def _sidebar(principal: Principal) -> None:
    s = common.settings()
    with st.sidebar:
        st.markdown(f"**{s.project}** · {s.task}")
        st.caption(
            f"{common.plain(principal.name)} · {principal.role}"
            + ("" if principal.via == "none" else f" · signed in via {principal.via}")
        )
        cols = st.columns(2)
        cols[0].button(
            "Refresh",
            key="refresh",
            on_click=common.refresh,
            help=f"Read everything again (answers are otherwise reused for {common.TTL} s)",
        )
        if s.dashboard.auth != "none":
            cols[1].button("Sign out", key="logout", on_click=_sign_out)


_load_project()
principal = _principal()
if principal is None:
    st.session_state.pop(common.PRINCIPAL_KEY, None)
    st.stop()
st.session_state[common.PRINCIPAL_KEY] = principal

# not "pages/": Streamlit would also serve a folder of that name as pages of their own,
# outside the sign-in and navigation below (a direct link to /overview would run it alone)
PAGES = HERE / "app_pages"
page = st.navigation(
    [
        st.Page(
            PAGES / "overview.py",
            title="Overview",
            icon=":material/monitoring:",
            url_path="home",
            default=True,
        ),
        # the same page under its own name, so that /overview works as a link
        st.Page(
            PAGES / "overview.py",
            title="Overview",
            icon=":material/monitoring:",
            url_path="overview",
            visibility="hidden",
        ),
        st.Page(PAGES / "drift.py", title="Drift", icon=":material/ssid_chart:", url_path="drift"),
        st.Page(
            PAGES / "models.py", title="Models", icon=":material/model_training:", url_path="models"
        ),
        st.Page(
            PAGES / "approvals.py",
            title="Approvals",
            icon=":material/approval:",
            url_path="approvals",
        ),
        st.Page(PAGES / "serving.py", title="Serving", icon=":material/dns:", url_path="serving"),
        st.Page(
            PAGES / "pipeline.py",
            title="Pipeline",
            icon=":material/account_tree:",
            url_path="pipeline",
        ),
        st.Page(
            PAGES / "backtests.py",
            title="Backtests",
            icon=":material/history:",
            url_path="backtests",
        ),
    ]
)
_sidebar(principal)
page.run()
