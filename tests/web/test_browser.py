"""The status page in a real browser: headless Chromium (Debian's chromium and
chromium-driver, which .ci/run installs) against a real ``aso server`` process holding rows in
every state. Fails, never skips, when the browser is missing."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as arrived
from selenium.webdriver.support.ui import WebDriverWait

from aso.state import open_backend
from tests.state.servers import start_state_server
from tests.web.data import PLAN, populate, totals

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def server(tmp_path):
    service, url = start_state_server(tmp_path)
    backend = open_backend(url, worker="worker-a", token="service-token", instance="test", retries=1)
    try:
        populate(backend)
    finally:
        backend.close()
    yield url
    service.stop()


@pytest.fixture
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).exists() or shutil.which(Path(path).name), (
            f"{path} is missing: apt-get install -y chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def log_in(driver, url: str, token: str) -> None:
    driver.get(f"{url}/")
    assert driver.current_url == f"{url}/login" and "Log in" in driver.title
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(driver, f"{url}/")


def log_out(driver, url: str) -> None:
    driver.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait_for(driver, f"{url}/login")


def wait_for(driver, url: str) -> None:
    """A click returns before the next page has loaded: wait for its URL."""
    try:
        WebDriverWait(driver, 10).until(arrived.url_to_be(url))
    except Exception:
        raise AssertionError(f"expected {url}, at {driver.current_url}:\n{driver.page_source[:2000]}") from None


def state_counts(driver, table: str) -> dict[str, int]:
    cells = driver.find_elements(By.CSS_SELECTOR, f"#{table} td[data-state]")
    return {c.get_attribute("data-state"): int(c.text) for c in cells if c.text != "0"}


def test_operator_and_user_in_a_real_browser(server, browser, tmp_path):
    url = server
    log_in(browser, url, "operator-token")
    assert state_counts(browser, "transfer-states") == totals()
    health = browser.find_element(By.ID, "health").text
    assert "running (pid 4242 holds the lock)" in health and "reporter" in health and "monitor" in health
    cookies = {c["name"]: c for c in browser.get_cookies()}
    assert cookies["aso_session"]["httpOnly"] is True and cookies["aso_session"]["sameSite"] == "Strict"
    assert not cookies["aso_session"]["secure"]  # plain HTTP on loopback
    overview_png = tmp_path / "overview.png"
    browser.save_screenshot(str(overview_png))

    browser.find_element(By.LINK_TEXT, "alice_task_1").click()
    wait_for(browser, f"{url}/task/alice_task_1")
    rows = browser.find_elements(By.CSS_SELECTOR, "#files tbody tr")
    assert len(rows) == sum(PLAN["alice"][1].values())
    assert "<script>" in browser.find_element(By.ID, "files").text  # shown as text, never run
    task_png = tmp_path / "task.png"
    browser.save_screenshot(str(task_png))
    browser.find_element(By.PARTIAL_LINK_TEXT, "FAILED").click()
    wait_for(browser, f"{url}/task/alice_task_1?state=FAILED")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#files tbody tr")) == 1
    log_out(browser, url)
    browser.get(f"{url}/")
    assert browser.current_url == f"{url}/login"

    log_in(browser, url, "bob-token")
    assert state_counts(browser, "transfer-states") == PLAN["bob"][1]
    assert "alice" not in browser.page_source and not browser.find_elements(By.ID, "health")
    browser.get(f"{url}/task/alice_task_1")
    assert "Not found" in browser.title and "alice" not in re.sub(r"<title>.*?</title>", "", browser.page_source)
    browser.get(f"{url}/task/bob_task_1?state=NOPE")
    assert "Bad request" in browser.title and "state" in browser.find_element(By.CSS_SELECTOR, "code.field").text
    log_out(browser, url)
    print(f"\nscreenshots: {overview_png} {task_png}")
