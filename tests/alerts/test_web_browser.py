"""The web scorecard in a real browser: Debian's Chromium, headless, driven by Selenium
through the Debian chromedriver, against a real alerts service on PostgreSQL.

A person logs in with the form, reads numbers equal to `kpi_value`, sees a goal turn red
within one refresh of a breach (no reload: the page swaps in fresh numbers), acknowledges a
firing alert with the page's button, and switches to Chinese. Screenshots of each step are
saved under .local/test-artifacts/web/ for a person to look at."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from shared.i18n import Locale
from shared.kpi_format import format_value
from tests.alerts.conftest import (
    ADMIN,
    ROOT,
    ServeScorecard,
    minute,
    put_points,
    wait_until,
)

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
SHOTS = ROOT / ".local" / "test-artifacts" / "web"
REFRESH = 2  # seconds between the page's own refreshes
T = TypeVar("T")


@pytest.fixture
def chrome() -> Iterator[WebDriver]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (make report-deps)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1400,1200",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: WebDriver, name: str) -> None:
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def wait_for(driver: WebDriver, check: Any, seconds: float) -> Any:
    return WebDriverWait(driver, seconds, poll_frequency=0.2).until(
        lambda d: check(d), message=f"not within {seconds} s"
    )


def unswapped(read: Callable[[], T], attempts: int = 5) -> T:
    """`read` again when the live refresh swapped the element it found for a new one
    between finding and reading it."""
    for _ in range(attempts - 1):
        try:
            return read()
        except StaleElementReferenceException:
            time.sleep(0.2)
    return read()


def goal_status(driver: WebDriver, goal: str) -> str | None:
    try:
        card = driver.find_element(By.CSS_SELECTOR, f'article[data-goal="{goal}"]')
        return card.get_attribute("data-status")
    except WebDriverException:  # not there yet, or swapped while read
        return None


async def test_a_person_reads_watches_and_acknowledges_in_a_real_browser(
    chrome: WebDriver, db: psycopg.Connection[Any], serve_scorecard: ServeScorecard
) -> None:
    now = minute()
    put_points(db, "refunds", 2, bucket=now - timedelta(minutes=3))
    put_points(db, "orders", 3, bucket=now - timedelta(minutes=2), dims={"source": "web"})
    put_points(db, "revenue", 3, bucket=now - timedelta(minutes=2), total=3 * 41.5)
    mark = now + timedelta(minutes=1)
    service = await serve_scorecard(now, mark, PACEKEEPER_ALERTS_WEB_REFRESH_SECONDS=str(REFRESH))

    # Logging in: the form, then back to the page asked for.
    chrome.get(f"{service.url}/kpis/orders")
    assert "/login" in chrome.current_url
    chrome.find_element(By.ID, "token").send_keys("wrong")
    chrome.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    refused = wait_for(chrome, lambda d: d.find_elements(By.CSS_SELECTOR, "[role=alert]"), 10)
    assert refused[0].text
    chrome.find_element(By.ID, "token").send_keys(ADMIN)
    chrome.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(chrome, lambda d: d.current_url.endswith("/kpis/orders"), 10)
    chrome.get(f"{service.url}/")

    # The numbers are kpi_value's, formatted for a person.
    day_start = datetime.combine(now.date(), datetime.min.time(), UTC)
    at = min(datetime.now(UTC), mark)
    for kpi, unit in (("orders", ""), ("revenue", "USD")):
        (value,) = db.execute("SELECT kpi_value(%s, %s, %s, NULL)", (kpi, day_start, at)).fetchone()  # type: ignore[misc]
        tile = f'article[data-kpi="{kpi}"] .big'
        text = unswapped(lambda: chrome.find_element(By.CSS_SELECTOR, tile).text)  # noqa: B023
        assert text == format_value(float(value), unit, Locale.en)
    assert goal_status(chrome, "refunds-cap") == "on_track"
    shot(chrome, "1-scorecard")

    # A breach: the goal turns red within one refresh, without reloading the page.
    chrome.execute_script("window.sameDocument = true;")
    put_points(db, "refunds", 50, bucket=now - timedelta(minutes=1))
    wait_for(chrome, lambda d: goal_status(d, "refunds-cap") == "off_track", REFRESH * 2 + 3)
    assert chrome.execute_script("return window.sameDocument === true;")
    badge = 'article[data-goal="refunds-cap"] [data-testid=goal-status]'
    colour = unswapped(
        lambda: chrome.find_element(By.CSS_SELECTOR, badge).value_of_css_property(
            "background-color"
        )
    )
    assert colour == "rgba(192, 21, 47, 1)"
    shot(chrome, "2-goal-breached")

    # The orders rule fires (9 orders in 5 minutes); the admin acknowledges it on the page.
    put_points(db, "orders", 6, bucket=now - timedelta(minutes=1))
    row = 'tr[data-name="orders-high"]'
    wait_for(chrome, lambda d: d.find_elements(By.CSS_SELECTOR, f"{row} [data-testid=ack]"), 20)
    # Once the comment has focus the page holds its refreshes; until then one may swap the
    # row just found.
    unswapped(
        lambda: chrome.find_element(By.CSS_SELECTOR, f'{row} input[name="comment"]').send_keys(
            "looking"
        )
    )
    chrome.find_element(By.CSS_SELECTOR, f"{row} [data-testid=ack]").click()
    wait_for(chrome, lambda d: d.find_elements(By.CSS_SELECTOR, f"{row} [data-testid=acked]"), 10)
    acked = "SELECT a.name, k.comment FROM acknowledgements k JOIN alerts a USING (fingerprint)"
    wait_until(lambda: db.execute(acked).fetchall() == [("orders-high", "looking")], 5)
    shot(chrome, "3-acknowledged")

    # The same page in Chinese: the catalogue's words and the locale's numbers.
    chrome.get(f"{service.url}/?lang=zh-CN")
    headings = [h.text for h in chrome.find_elements(By.TAG_NAME, "h2")]
    assert any("目标" in h for h in headings), headings
    assert chrome.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"
    shot(chrome, "4-scorecard-zh-CN")
    chrome.get(f"{service.url}/goals/refunds-cap")  # the choice is remembered
    assert chrome.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-CN"
