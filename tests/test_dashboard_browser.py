"""The dashboard in headless Chromium (selenium): the whole member scenario with the openai SDK, and refusals.

Needs the Debian packages `chromium` and `chromium-driver` (skipped without them). One browser is
shared by the module's tests. Every page visited is screenshotted into the test's folder (and
into $DASHBOARD_SCREENSHOTS when set: docs/dashboard.png is the usage page from such a run) and
checked to render: a heading, no server error.
"""

from __future__ import annotations

import datetime
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests

from gateway import db
from gateway.accounting import credits
from gateway.accounting.keys import create_key
from gateway.dashboard import users
from gateway.tables import UsageEntry

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
PASSWORD = "correct horse battery"
WAIT_S = 20
PRICED = {"provider": "fake", "upstream_model": "upstream-model",
          "input_price_per_mtok": 1000.0, "output_price_per_mtok": 2000.0}


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1200,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    try:
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    except WebDriverException as exc:
        pytest.skip(f"chromium does not start here: {exc.msg}")
    yield driver
    driver.quit()


@pytest.fixture
def settings(make_settings):
    """A priced model (so a request costs credits) and a sign-in limit of 3 failures."""
    return make_settings(models={"test-model": PRICED}, dashboard={"sign_in_attempts": 3})


HISTORY = [(1, "test-model", 40_000, 400), (3, "backup-model", 90_000, 2100), (6, "test-model", 25_000, 350),
           (11, "backup-model", 60_000, 1800), (17, "test-model", 30_000, 500), (24, "backup-model", 75_000, 1900)]


def seed_history(today: UsageEntry) -> None:
    """Usage rows on earlier days, like `today`'s (for the charts; balances come from the ledger, not these)."""
    for days_ago, model, cost, latency_ms in HISTORY:
        UsageEntry.create(request_id=f"history-{days_ago}", api_key=today.api_key_id, account=today.account_id,
                          endpoint=today.endpoint, model=model, prompt_tokens=cost // 1000,
                          completion_tokens=cost // 4000, status=200, latency_ms=latency_ms, cost=cost,
                          created_at=today.created_at - datetime.timedelta(days=days_ago))


class Pages:
    """The browser pointed at one live gateway: visits, form filling, screenshots."""

    def __init__(self, driver: webdriver.Chrome, base_url: str, folder: Path) -> None:
        self.driver, self.base_url, self.folder = driver, base_url, folder
        self.shots: list[Path] = []
        driver.delete_all_cookies()

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def fill(self, field_id: str, value: str) -> None:
        element = self.driver.find_element(By.ID, field_id)
        element.clear()
        element.send_keys(value)

    def click_and_load(self, selector: str) -> None:
        """Click what sends a form, and wait until the next page replaced this one."""
        page = self.driver.find_element(By.TAG_NAME, "html")
        self.driver.find_element(By.CSS_SELECTOR, selector).click()
        # While the page navigates, chromedriver may answer a check with "unhandled inspector error"
        # (no execution context yet): that is not an answer, so ask again.
        WebDriverWait(self.driver, WAIT_S, ignored_exceptions=(WebDriverException,)).until(
            expected_conditions.staleness_of(page))

    def submit(self, form_selector: str = "main form") -> None:
        self.click_and_load(f"{form_selector} button[type=submit]")

    def sign_in(self, email: str, password: str = PASSWORD) -> None:
        self.fill("email", email)
        self.fill("password", password)
        self.submit()

    def text(self, selector: str = "main") -> str:
        return self.driver.find_element(By.CSS_SELECTOR, selector).text

    def rendered(self, name: str) -> str:
        """Check the page rendered (a heading, no server error), screenshot it, return main's text."""
        heading = self.text("h1")
        source = self.driver.page_source
        assert heading and "Internal server error" not in source and "Error 5" not in heading, heading
        shot = self.folder / f"{len(self.shots):02d}-{name}.png"
        assert self.driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 2000
        self.shots.append(shot)
        if os.environ.get("DASHBOARD_SCREENSHOTS"):
            shutil.copy(shot, Path(os.environ["DASHBOARD_SCREENSHOTS"]) / shot.name)
        return self.text()


def create_key_and_read_it_once(pages: Pages) -> str:
    """Create a key on the keys page, copy it from the one page that shows it, check a reload finds it gone."""
    pages.fill("name", "sdk key")
    pages.submit("#create-key")
    page = pages.rendered("key-created")
    secret = pages.driver.find_element(By.ID, "new-key").get_attribute("value")
    assert secret.startswith("sk-gw-") and "only time it is shown" in page
    pages.driver.find_element(By.CSS_SELECTOR, "[data-copy=new-key]").click()
    WebDriverWait(pages.driver, WAIT_S).until(
        lambda driver: driver.find_element(By.CSS_SELECTOR, ".copied").text == "Copied.")
    pages.driver.refresh()  # a reload asks for the page again (a GET), never the form: no second key
    page = pages.rendered("key-page-reloaded")
    assert "shown only once" in page and secret not in pages.driver.page_source
    assert len(pages.driver.find_elements(By.CSS_SELECTOR, "table.keys tr[data-key-prefix]")) == 1
    pages.open("/dashboard/keys")
    page = pages.rendered("keys")
    assert "sdk key" in page and secret[:12] in page and secret not in pages.driver.page_source
    return secret


def check_usage_page(pages: Pages, request_id: str, outsider_prefix: str) -> None:
    """The SDK's request in the table; the charts drawn from the same rows; nothing of the other account."""
    pages.open("/dashboard/usage")
    pages.rendered("usage")
    row = pages.text(f'#requests tr[data-request-id="{request_id}"]')
    assert "test-model" in row and "11 / 7" in row and "0.025" in row and "200" in row
    assert "bob" not in pages.driver.page_source and outsider_prefix not in pages.driver.page_source
    spend_per_day = pages.driver.find_elements(By.CSS_SELECTOR, ".charts figure:first-child rect.bar")
    assert len(spend_per_day) == 30
    assert sum(1 for bar in spend_per_day if float(bar.get_attribute("height")) > 0) == len(HISTORY) + 1
    assert "backup-model" in pages.text(".per-model")


def stream_in_playground(pages: Pages, secret: str) -> None:
    """Send a message from the playground with the key, as chat and as Responses; the streamed answer arrives."""
    pages.open("/dashboard/playground")
    pages.fill("pg-key", secret)
    for api in ("responses", "chat"):
        pages.driver.find_element(By.CSS_SELECTOR, f"input[name=pg-api][value={api}]").click()
        pages.driver.execute_script("document.getElementById('pg-status').textContent = ''")
        pages.driver.find_element(By.CSS_SELECTOR, "#playground button[type=submit]").click()  # a fetch, no load
        WebDriverWait(pages.driver, WAIT_S).until(
            lambda driver: driver.find_element(By.ID, "pg-status").text not in ("", "Sending…", "Streaming…"))
        assert (pages.text("#pg-status"), pages.text("#pg-output")) == ("Done.", "Hello world"), api
    pages.rendered("playground")


def test_member_scenario_with_the_openai_sdk(browser, live_server, app, tmp_path):
    with db.database.connection_context():
        alice = users.create_user("alice@example.com", PASSWORD)
        credits.grant_credits(alice.account_id, 10_000_000)
        other, other_secret = create_key("bob-private-key")
        credits.grant_credits(other.account_id, 20_000_000)
    outsider = openai.OpenAI(base_url=f"{live_server}/v1", api_key=other_secret, max_retries=0)
    outsider.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "bob's"}])
    pages = Pages(browser, live_server, tmp_path)

    pages.open("/dashboard/keys")  # signed out: the sign-in page, then back here
    pages.rendered("sign-in")
    pages.sign_in("alice@example.com")
    assert browser.current_url.endswith("/dashboard/keys")
    secret = create_key_and_read_it_once(pages)

    sdk = openai.OpenAI(base_url=f"{live_server}/v1", api_key=secret, max_retries=0)
    raw = sdk.chat.completions.with_raw_response.create(
        model="test-model", messages=[{"role": "user", "content": "hi"}])
    assert raw.parse().choices[0].message.content == "Hello from upstream"
    request_id = raw.headers["x-request-id"]
    with db.database.connection_context():
        seed_history(UsageEntry.get(UsageEntry.request_id == request_id))
    check_usage_page(pages, request_id, other.prefix)

    pages.open("/dashboard/")
    pages.rendered("balance")
    api_balance = requests.get(f"{live_server}/api/v3/auth/credit-balance", timeout=10,
                               headers={"Authorization": f"Bearer {secret}"}).json()
    shown = browser.find_element(By.ID, "current-balance").text
    assert shown == "9.975" and float(shown) == api_balance["current_balance"]  # 10 - 11 x 0.001 - 7 x 0.002

    stream_in_playground(pages, secret)
    pages.open(f"/dashboard/usage?key={other.id}")  # another account's key: filtered out, never shown
    assert "No requests match." in pages.rendered("usage-other-key") and other.prefix not in browser.page_source
    pages.open("/dashboard/keys")
    pages.click_and_load("button[aria-label^='Revoke key']")
    assert "Revoked key" in pages.rendered("revoked")
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "again"}])
    assert refused.value.status_code == 401
    with db.database.connection_context():
        assert UsageEntry.select().where(UsageEntry.account == alice.account_id).count() == len(HISTORY) + 3


def test_refusals_csrf_wrong_password_sign_in_limit(browser, live_server, app, tmp_path):
    with db.database.connection_context():
        users.create_user("carol@example.com", PASSWORD)
    pages = Pages(browser, live_server, tmp_path)
    pages.open("/dashboard/login")
    browser.execute_script("document.querySelector('input[name=csrf_token]').remove()")
    pages.sign_in("carol@example.com")
    assert "CSRF check failed" in pages.rendered("csrf-refused")
    pages.open("/dashboard/login")
    pages.sign_in("carol@example.com", "not the password")
    assert "Wrong email or password." in pages.rendered("wrong-password")
    for _ in range(2):
        pages.sign_in("carol@example.com", "still not it")
    pages.sign_in("carol@example.com")  # the right password, after 3 failures
    assert "Too many failed sign-ins" in pages.rendered("sign-in-limit")
    assert browser.current_url.endswith("/dashboard/login")
