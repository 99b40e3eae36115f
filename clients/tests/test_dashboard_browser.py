"""The dashboard in a real browser: Debian's Chromium (headless) driven by Playwright for
Python, against a live server. Opens every page, checks its key elements and that no exception
is shown, and saves a screenshot of each page (into docs/screenshots/ with
RECSYS_UPDATE_SCREENSHOTS=1, else into the test's temporary directory).

Chromium comes from Debian's package (apt-get when missing); Playwright never downloads a
browser here."""

# The fixtures imported from test_dashboard_support are used as same-named parameters.
# ruff: noqa: F811

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_dashboard_support import (  # noqa: F401
    ROOT,
    Live,
    child_env,
    dash_trained,
    free_port,
    live,
)

from recsys_client import Interaction, RecsysClient
from recsys_dashboard import artifacts, pickers

CHROMIUM = Path("/usr/bin/chromium")
PLAYWRIGHT = "playwright==1.65.2"
WIDTH = 1600
# page url path -> texts that must be visible
PAGES = {
    "overview": ("", ["Serving at a glance", "Requests / s", "Models loaded", "NDCG@10"]),
    "users": ("users", ["Top 8, model by model", "Fallback tier", "History", "hybrid"]),
    "lab": ("lab", ["How the five recommenders compare", "Hybrid weights", "re-blended"]),
    "similar": ("similar", ["Items like this one", "item_cf", "svd", "Shared neighbours"]),
    "simulate": ("simulate", ["Watch the recommendations learn", "Recommended now"]),
    "catalogue": (
        "catalogue",
        ["The live catalogue", "Add an item", "In a user's top K", "Page 1"],
    ),
    "experiments": (
        "experiments",
        ["A/B tests and interleaving", "Variants", "Differences to the control", "Sample ratio"],
    ),
}


def ensure_chromium() -> Path:
    """Debian's chromium, installed with apt-get when missing (fails, never skips)."""
    if CHROMIUM.exists():
        return CHROMIUM
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.fail(f"{CHROMIUM} is missing and apt-get is not available to install chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["update"], ["install", "-y", "--no-install-recommends", "chromium"]):
        for _ in range(30):  # another apt run may hold the dpkg lock for a while
            done = subprocess.run([apt, *args], capture_output=True, text=True, env=env)
            if done.returncode == 0 or "lock" not in done.stderr.lower():
                break
            time.sleep(10)
        if done.returncode != 0:
            pytest.fail(f"apt-get {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr}")
    if not CHROMIUM.exists():
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} is still missing")
    return CHROMIUM


def ensure_playwright() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", PLAYWRIGHT],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.fail(f"pip install {PLAYWRIGHT} failed:\n{done.stderr}")


@pytest.fixture(scope="module")
def dashboard(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m recsys_dashboard` on a free port; yields its base URL."""
    port = free_port()
    log = (tmp_path_factory.mktemp("dashboard") / "dashboard.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys_dashboard", "--port", str(port)],
        env=child_env(live),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"the dashboard did not start:\n{log.read()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser_page(dashboard: str):
    ensure_playwright()
    chromium = ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium), headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": WIDTH, "height": 1000})
        yield page
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("RECSYS_UPDATE_SCREENSHOTS"):
        out = ROOT / "docs" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        return out
    return tmp_path_factory.mktemp("screenshots")


def settle(page) -> None:
    """Waits until Streamlit has finished running the script."""
    page.wait_for_selector('[data-testid="stAppViewContainer"]', timeout=30_000)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=30_000
    )
    page.wait_for_timeout(1200)  # charts draw after the script ends


def check_clean(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    body = page.inner_text("body")
    assert "Traceback" not in body
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0, body[:2000]


def screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main element, so grow the viewport."""
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": WIDTH, "height": max(900, min(int(height), 4200))})
    page.wait_for_timeout(800)
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": WIDTH, "height": 1000})


@pytest.mark.parametrize("name", list(PAGES))
def test_page_in_chromium(name: str, browser_page, dashboard: str, shots: Path, live: Live) -> None:
    path, expected = PAGES[name]
    page = browser_page
    if name == "users":  # a stored event for the page's default user, and what to expect
        expected = [*expected, *history_and_explanation(live)]
    if name == "experiments":  # traffic on the A/B test before the page reads its report
        expected = [*expected, *experiment_traffic(live)]
    page.goto(f"{dashboard}/{path}")
    settle(page)
    if name == "overview":  # some traffic, and a few metrics scrapes to measure its rate
        with RecsysClient(live.address) as client:
            end = time.monotonic() + 7
            while time.monotonic() < end:
                for user in ("u001", "u002", "nobody"):
                    client.recommend(user, 10, explain=True)
                time.sleep(0.02)
    if name == "simulate":
        page.get_by_role("button", name="New cold user").click()
        settle(page)
        for n in range(1, 4):  # a cold user warming up: three clicks on the top item
            page.get_by_role("button", name="click").first.click()
            page.get_by_text(f"{n} sent here").wait_for(timeout=30_000)
            settle(page)
        expected = [*expected, "Warming up: 3 of 5 items", "Why it changed", "cold start"]
    for text in expected:
        page.get_by_text(text).first.wait_for(state="attached", timeout=30_000)
    settle(page)
    body = page.inner_text("body").lower()  # labels may be uppercased by CSS
    for text in expected:
        assert text.lower() in body, f"{name}: {text!r} not on the page"
    check_clean(page)
    screenshot(page, shots / f"{name}.png")
    assert (shots / f"{name}.png").stat().st_size > 10_000


def history_and_explanation(live: Live) -> list[str]:
    """Records a purchase for the user explorer's default user; returns texts its page must
    show: the event type and item title (GetUserHistory) and an explanation text."""
    user = pickers.default_user(artifacts.load(live.trained.artifacts))
    with RecsysClient(live.address) as client:
        item = client.recommend(user, 1, model="popularity").items[0]
        client.record_interactions(Interaction.create(user, item.item_id, "purchase"))
        assert client.user_history(user, 5).events[0].event_type == "purchase"
        why = client.recommend(user, 8, model="hybrid", explain=True).items[0].explanation
    assert why is not None and why.text
    return ["Stored events", "purchase", item.title, why.text]


def experiment_traffic(live: Live) -> list[str]:
    """Recommendations for 60 users of the live server's A/B experiment, every third clicking
    its top item; returns texts the Experiments page must show (a variant's users)."""
    with RecsysClient(live.address) as client:
        clicks = []
        for n in range(60):
            r = client.recommend(f"u{n:03d}", 5)
            if n % 3 == 0:
                clicks.append(
                    Interaction.create(
                        r.user_id,
                        r.item_ids[0],
                        "click",
                        recommendation_id=r.recommendation_id,
                        position=1,
                    )
                )
        client.record_interactions(clicks)
        deadline = time.monotonic() + 30  # impressions are stored off the request path
        while True:
            report = client.experiment_report("blend")
            if sum(v.impressions for v in report.variants) >= 60:
                break
            assert time.monotonic() < deadline, "impressions not stored"
            time.sleep(0.2)
    return [f"{v.users:,}" for v in report.variants]


def row_text(page, item_id: str) -> str:
    """The text of the catalogue listing's row for ``item_id``."""
    row = page.locator("table.rs-table tr", has_text=item_id).first
    row.wait_for(timeout=30_000)
    return row.inner_text()


def test_catalogue_in_chromium(browser_page, dashboard: str, shots: Path, live: Live) -> None:
    """Adds an item with the shown user's main categories through the form, sees it listed
    and in that user's list at the reserved slot, explained as new; makes it unavailable; the
    page and the server agree at each step."""
    item_id = "a-browser-item"  # sorts before the generated ids: on the first page
    page = browser_page
    page.goto(f"{dashboard}/catalogue")
    settle(page)
    header = page.get_by_text(re.compile(r"^\S+ · hybrid$")).first.inner_text()
    user = header.split(" · ")[0]
    with RecsysClient(live.address) as client:
        counts: dict[str, int] = {}
        for h in client.user_history(user, 1).training_items:
            for c in client.get_item(h.item_id).categories:
                counts[c] = counts.get(c, 0) + 1
        cats = sorted(counts, key=lambda c: (-counts[c], c))[:2]
        page.get_by_label("Item id", exact=True).fill(item_id)
        page.get_by_label("Title", exact=True).fill("Browser kettle")
        page.get_by_label("Categories", exact=True).fill(", ".join(cats))
        page.get_by_role("button", name="Add item").click()
        page.get_by_text(f"UpsertItems stored {item_id}").first.wait_for(timeout=30_000)
        settle(page)
        got = client.get_item(item_id)
        assert (got.title, list(got.categories), got.available) == ("Browser kettle", cats, True)
        row = row_text(page, item_id)
        assert "Browser kettle" in row and cats[0] in row and "unavailable" not in row
        assert client.recommend(user, 10).item_ids[2] == item_id
        page.get_by_text(f"is #3 in {user}'s top 10").first.wait_for(timeout=30_000)
        page.get_by_text("(new to you: just added)").first.wait_for(timeout=30_000)
        check_clean(page)
        screenshot(page, shots / "catalogue-added.png")

        page.get_by_role("button", name="Make unavailable").click()
        page.get_by_text(f"SetItemAvailability: {item_id} is unavailable").first.wait_for(
            timeout=30_000
        )
        settle(page)
        assert client.get_item(item_id).available is False
        off = client.list_items(1000, available=False).items
        assert item_id in [i.item_id for i in off]
        assert "unavailable" in row_text(page, item_id)
        assert page.get_by_role("button", name="Make available").count() == 1
        check_clean(page)
        screenshot(page, shots / "catalogue-unavailable.png")
        assert (shots / "catalogue-unavailable.png").stat().st_size > 10_000


def test_server_down_in_chromium(browser_page, tmp_path: Path) -> None:
    """A dashboard pointed at a dead address shows the message, not a traceback."""
    port, dead = free_port(), free_port()
    env = {**os.environ, "RECSYS_TARGET": f"127.0.0.1:{dead}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsys_dashboard", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        page = browser_page
        deadline = time.monotonic() + 60
        while True:
            try:
                page.goto(f"http://127.0.0.1:{port}/users")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        # The message comes once the client has given up on the dead address (its own
        # retries and deadline); wait for it rather than for a fixed time.
        page.get_by_text("Cannot reach the recsys server").first.wait_for(timeout=90_000)
        settle(page)
        body = page.inner_text("body")
        assert "Cannot reach the recsys server" in body and "Traceback" not in body
        assert page.locator('[data-testid="stException"]').count() == 0
    finally:
        proc.terminate()
        proc.wait(15)
