"""The dashboard in a real browser: ``streamlit run`` on 127.0.0.1 (``services.start_dashboard``),
driven by Playwright on Debian's chromium (``.ci/run`` installs it with apt; never
``playwright install``). Sign in with a password as an approver, open every page (a full-page
screenshot of each lands in ``test-artifacts/dashboard/``, and one each of the Models comparison
and of the pending version's approval card), approve the pending version with a comment on
Approvals, and see the champion change in the registry and on Overview.

Skipped when chromium is missing, except under ``CI``, where that fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from registry_helpers import (
    demo_frame,
    demo_settings,
    ingest_frame,
    with_changes,
    write_config,
)

from mlops_core.backtest.engine import load_history, run_backtest, write_json
from mlops_core.config import Settings
from mlops_core.demo.stream import TARGET, TIME
from mlops_core.monitor.run import monitor
from mlops_core.ops.auth import add_user
from mlops_core.ops.services import DASHBOARD, ServiceInfo, start_dashboard, stop_service
from mlops_core.read.views import backtests_dir
from mlops_core.registry.registry import Registry
from mlops_core.train.pipeline import train_and_register

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / "test-artifacts" / "dashboard"
PAGES = ("overview", "drift", "models", "approvals", "pipeline", "backtests")
USER, PASSWORD = "ana", "ana-password-1"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
TIMEOUT_MS = 90_000  # generous: CI machines are slow and shared

# Streamlit is done with the page: its script run is over, nothing stale is left on screen,
# and the main area's title names the page
RENDERED_JS = """
([name]) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-testid="stStatusWidgetRunningIcon"], [data-stale="true"]'))
    return false;
  return [...document.querySelectorAll('[data-testid="stMain"] h1')]
    .some(h => h.textContent.toLowerCase().includes(name));
}
"""


@pytest.fixture
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it with apt)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture
def project(mlflow_server: ServiceInfo, tmp_path: Path) -> tuple[Settings, Path, str, str]:
    """A demo project with a champion, a monitoring run (and its report), a backtest result
    and one version retrained on the newer rows awaiting approval; password sign-in with an
    approver. Returns (settings, mlops.yaml, champion, pending version)."""
    s = demo_settings(
        tmp_path,
        mlflow_server.url,
        "dash-browser",
        gate={"smoke_test": False, "slice_columns": ["region"]},
    )
    frame = demo_frame(8000, days=84)
    t0 = frame[TIME].min()
    ingest_frame(s, frame[frame[TIME] < t0 + (frame[TIME].max() - t0) * 0.75], tmp_path / "in")
    out = train_and_register(s)
    assert out.status == "pending_approval", out.gate.reasons
    reg = Registry(s)
    champion = str(out.version)
    assert reg.approve(champion, by="tests", comment="the first model").ok
    ingest_frame(
        s,
        frame[frame[TIME] >= t0 + (frame[TIME].max() - t0) * 0.75],
        tmp_path / "in",
        "new.parquet",
    )
    assert monitor(s, report=True).report
    history = tmp_path / "history.parquet"
    frame.to_parquet(history, index=False)
    replay = load_history(
        history, target=TARGET, time_column=TIME, batch_period="7D", initial_batches=3, settings=s
    )
    write_json(run_backtest(replay, ["static", "periodic:4"]), backtests_dir(s) / "history.json")
    # retrained on every row (the gate made lenient: the card shows it, better or worse)
    out = train_and_register(
        with_changes(s, gate={"min_improvement": -1.0, "max_slice_regression": None})
    )
    assert out.status == "pending_approval", out.gate.reasons
    pending = str(out.version)
    users = tmp_path / "users.yaml"
    add_user(users, USER, PASSWORD, "approver")
    config = write_config(
        with_changes(s, dashboard={"auth": "password", "users_file": str(users)}),
        tmp_path / "mlops.yaml",
    )
    return s, config, champion, pending


@pytest.fixture
def dashboard(
    project: tuple[Settings, Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServiceInfo]:
    settings, config, _, _ = project
    # no "source file changed, rerun?" prompt while someone edits the pages
    monkeypatch.setenv("STREAMLIT_SERVER_FILE_WATCHER_TYPE", "none")
    info = start_dashboard(settings.workspace, config)
    try:
        yield info
    finally:
        stop_service(settings.workspace, DASHBOARD)


def _rendered(page: Any, name: str) -> None:
    page.wait_for_function(RENDERED_JS, arg=[name], timeout=TIMEOUT_MS)
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, f"{name}: {errors.first.inner_text()[:2000]}"


def _open(page: Any, name: str) -> None:
    """Click the page's link in the navigation (the session, and the sign-in, go on)."""
    link = page.locator(f'a[data-testid$="NavLink"][href$="/{name}"]')
    if not link.count():  # the default page's link is the app's root
        link = page.locator('a[data-testid$="NavLink"]')
    link.first.click()
    _rendered(page, name)


def _screenshot(page: Any, name: str) -> None:
    """The whole page: Streamlit scrolls its main area inside the window, so grow the window
    to the content first."""
    size = page.viewport_size
    height = page.evaluate("""() => Math.max(document.body.scrollHeight, ...[...document
        .querySelectorAll('[data-testid="stMain"], [data-testid="stMainBlockContainer"], '
                          + '[data-testid="stSidebarContent"]')].map(e => e.scrollHeight))""")
    page.set_viewport_size(
        {"width": size["width"], "height": min(max(height, size["height"]), 20_000)}
    )
    try:
        page.wait_for_timeout(300)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    finally:
        page.set_viewport_size(size)


def _screenshot_of(page: Any, selector: str, name: str) -> None:
    """One part of the page (an element), its charts drawn: the window grown to the content
    first, as for :func:`_screenshot`."""
    part = page.locator(selector).first
    part.scroll_into_view_if_needed()
    page.wait_for_function(
        """([sel]) => [...document.querySelectorAll(sel + ' [data-testid="stPlotlyChart"]')]
            .every(c => c.querySelector('.main-svg'))""",
        arg=[selector],
        timeout=TIMEOUT_MS,
    )
    size = page.viewport_size
    box = part.bounding_box() or {"height": size["height"]}
    page.set_viewport_size(
        {
            "width": size["width"],
            "height": min(max(int(box["height"]) + 200, size["height"]), 20_000),
        }
    )
    try:
        part.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        part.screenshot(path=str(SHOTS / f"{name}.png"))
    finally:
        page.set_viewport_size(size)


def test_sign_in_browse_every_page_and_approve_in_a_browser(
    chromium: str, project: tuple[Settings, Path, str, str], dashboard: ServiceInfo
) -> None:
    from playwright.sync_api import expect, sync_playwright

    settings, _, champion, pending = project
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(dashboard.url)
            page.locator(".st-key-login_user input").fill(USER)
            page.locator(".st-key-login_password input").fill(PASSWORD)
            page.locator(".st-key-login_submit button").click()
            _rendered(page, "overview")
            expect(page.locator('[data-testid="stSidebar"]')).to_contain_text(
                f"{USER} · approver", timeout=TIMEOUT_MS
            )

            for name in (*PAGES[1:], "overview"):
                _open(page, name)
                _screenshot(page, name)
                if name == "models":  # the champion and the candidate, compared
                    _screenshot_of(page, ".st-key-compare_view", "models-compare")
            champion_card = page.locator('[data-testid="stMetric"]', has_text="Champion")
            expect(champion_card).to_contain_text(f"v{champion}", timeout=TIMEOUT_MS)

            _open(page, "approvals")
            card = page.locator(f".st-key-approval_card_{pending}")
            expect(card.locator('[data-testid="stPlotlyChart"]')).to_have_count(4)  # the bars,
            # both confusion matrices, the threshold view
            expect(card.locator('a[href*="/runs/"]')).to_have_count(2)  # both MLflow runs
            _screenshot_of(page, f".st-key-approval_card_{pending}", "approval-card")
            page.locator(f".st-key-approve_comment_{pending} textarea").fill(
                "better on the recent weeks (browser test)"
            )
            page.locator(f".st-key-approve_{pending} button").click()
            expect(page.locator('[data-testid="stAlert"]', has_text="is champion")).to_contain_text(
                f"v{pending} is champion", timeout=TIMEOUT_MS
            )
            _rendered(page, "approvals")
            _screenshot(page, "approvals-after")

            assert Registry(settings).champion() == pending
            [rec] = [r for r in Registry(settings).audit(action="approve") if r.version == pending]
            assert (rec.actor, rec.outcome, rec.previous_champion) == (USER, "applied", champion)
            assert rec.reason == "better on the recent weeks (browser test)"

            _open(page, "overview")
            expect(champion_card).to_contain_text(f"v{pending}", timeout=TIMEOUT_MS)
            _screenshot(page, "overview-after")
        except BaseException:
            page.screenshot(path=str(SHOTS / "failure.png"))  # what the browser showed
            raise
        finally:
            browser.close()
