"""Helpers for end-to-end tests: a real `streamlit run` server and headless Chromium.

Used by the fixtures in tests/e2e/conftest.py; kept here (an importable module) so any test can
also call the waiting helpers directly. Nothing here knows about a particular page.

Caveats: Chromium and chromedriver come from Debian's `chromium` / `chromium-driver` packages
(`/usr/bin/chromium`, `/usr/bin/chromedriver`); when they are missing, tests skip, except in
CI (`CI=true`), where they fail: a CI machine without a browser must not pass silently. The app's
run state is read from the `data-test-script-state` attribute Streamlit's frontend puts on
`[data-testid="stApp"]` ("running" while the script runs, "notRunning" when it is idle); elements
not drawn yet show as `[data-testid="stSkeleton"]` placeholders, so "idle" waits for both.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO_ROOT = Path(__file__).resolve().parents[2]
CHROME_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1800",
)


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def in_ci() -> bool:
    """CI sets CI=true (GitHub Actions, GitLab and most others do too)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


MISSING = (
    f"chromium / chromedriver not installed ({CHROMIUM}, {CHROMEDRIVER}): "
    "apt-get install chromium chromium-driver (bash test.sh does it when it can)"
)


def require_chromium() -> None:
    """Skip the calling test when Chromium is missing, or fail it in CI."""
    import pytest

    if chromium_available():
        return
    if in_ci():
        pytest.fail(f"{MISSING}; CI runs the browser tests, so this is a failure")
    pytest.skip(MISSING)


def free_port() -> int:
    """A TCP port free right now on localhost (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StreamlitServer:
    """One `python -m streamlit run app.py` process over a store; `url` once it is healthy."""

    def __init__(self, store_root: Path | str, env: dict[str, str] | None = None) -> None:
        self.store_root = Path(store_root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = tempfile.NamedTemporaryFile(prefix="streamlit-", suffix=".log", delete=False)  # noqa: SIM115
        command = [
            sys.executable, "-m", "streamlit", "run", "app.py",
            "--server.port", str(self.port), "--server.address", "127.0.0.1",
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none",
        ]  # fmt: skip
        full_env = {**os.environ, "ACTX_STORE": str(self.store_root), **(env or {})}
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def wait_healthy(self, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"streamlit exited with {self.process.returncode}:\n{self.log()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        return self.url
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise TimeoutError(f"streamlit not healthy after {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


def make_chrome(user_data_dir: Path):
    """A headless Chromium driven by selenium, with its own fresh profile folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def remove_profile(user_data_dir: Path) -> None:
    shutil.rmtree(user_data_dir, ignore_errors=True)


def script_state(driver) -> str | None:
    """The app's run state from the frontend, or None before the app has mounted."""
    from selenium.webdriver.common.by import By

    apps = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"]')
    return apps[0].get_attribute("data-test-script-state") if apps else None


def pending_elements(driver) -> int:
    """Placeholders (`stSkeleton`) the frontend shows until an element has been drawn."""
    from selenium.webdriver.common.by import By

    return len(driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSkeleton"]'))


def wait_for_idle(driver, timeout: float = 120.0, settle: float = 0.5) -> None:
    """Wait until the script has run and the page is drawn, stable for `settle` seconds.

    The script can finish (state "notRunning") seconds before a slow browser has drawn what it
    sent, so placeholders must be gone too.
    """
    deadline = time.monotonic() + timeout
    idle_since = None
    while time.monotonic() < deadline:
        if script_state(driver) == "notRunning" and not pending_elements(driver):
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= settle:
                return
        else:
            idle_since = None
        time.sleep(0.1)
    raise TimeoutError(
        f"app still {script_state(driver)!r} with {pending_elements(driver)} placeholders "
        f"after {timeout} s"
    )


def wait_for_css(driver, selector: str, timeout: float = 60.0):
    """The elements matching `selector` once at least one exists (raises TimeoutError)."""
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = driver.find_elements(By.CSS_SELECTOR, selector)
        if found:
            return found
        time.sleep(0.1)
    raise TimeoutError(f"no element matches {selector!r} after {timeout} s")


def choose_option(driver, key: str, starts_with: str, tries: int = 6) -> None:
    """Open the selectbox of widget `key` and click its option whose text starts with
    `starts_with`. A click that lands while the frontend redraws the widget opens nothing (or the
    list closes again): seen under load in CI, so the click is retried, each try waiting a while
    for the list."""
    from selenium.webdriver.common.by import By

    selector = f".st-key-{key} input[role='combobox']"
    for _ in range(tries):
        wait_for_idle(driver)
        driver.find_element(By.CSS_SELECTOR, selector).click()
        try:
            options = wait_for_css(driver, "[role='option']", timeout=10.0)
        except TimeoutError:
            continue
        wanted = [o for o in options if o.text.strip().startswith(starts_with)]
        if wanted:
            wanted[0].click()
            return
        raise AssertionError(f"no option of {key!r} starts with {starts_with!r}: "
                             f"{[o.text for o in options]}")  # fmt: skip
    raise TimeoutError(f"the options of {key!r} did not open after {tries} clicks")


def open_page(driver, url: str, timeout: float = 120.0) -> None:
    """Load `url` and wait until the app has finished running its script."""
    driver.get(url)
    wait_for_css(driver, '[data-testid="stApp"]', timeout)
    wait_for_idle(driver, timeout)


def page_text(url: str, timeout: float = 90.0) -> str:
    """Open `url` in a fresh headless Chromium, wait until the app has drawn it, and return the
    page's text. Raises AssertionError when the page shows an exception (for checks outside the
    pytest fixtures, such as the documented commands' server checks)."""
    from selenium.webdriver.common.by import By

    profile = Path(tempfile.mkdtemp(prefix="chrome-profile-"))
    driver = make_chrome(profile)
    try:
        driver.set_page_load_timeout(timeout)
        open_page(driver, url, timeout)
        errors = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        assert not errors, f"{url} shows an exception: {errors[0].text[:2000]}"
        return driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()
        remove_profile(profile)
