"""The page's browser tests' shared parts: the real server with the demo pack (small caps, so the page's own checks
can be tried with small files), headless Chromium via Selenium, keys-only navigation helpers."""
from __future__ import annotations

import shutil
import time

import pytest
from page_support import SHOTS
from testkit.service import TOKEN, Server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402,F401 (Select: for the tests)

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")
MAX_UPLOAD_MB, MAX_DURATION_S = 20, 600


def page_server(tmp_path_factory):
    """The real server with the demo pack (a generator: each test module's `server` fixture yields from it)."""
    srv = Server(tmp_path_factory.mktemp("page") / "data", None, SPARK_DEMO_PACK="1", SPARK_ALLOW_PRIVATE_URLS=1,
                 SPARK_MAX_UPLOAD_MB=MAX_UPLOAD_MB, SPARK_MAX_DURATION_S=MAX_DURATION_S).start()
    yield srv
    srv.stop()


def chromium(downloads):
    """Headless Chromium downloading into `downloads` (a generator, like page_server)."""
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                "--no-first-run", "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    driver.save_screenshot(str(SHOTS / f"{name}.png"))


def wait(driver, cond, timeout: float = 30, what: str = ""):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: cond(d), what)


def visible_text(driver, css: str) -> str:
    el = driver.find_element(By.CSS_SELECTOR, css)
    return el.text if el.is_displayed() else ""


def drawn_pixels(driver, stem: str) -> int:
    return driver.execute_script("""
        const c = document.querySelector(`.track[data-stem="${arguments[0]}"] canvas`);
        if (!c || !c.width) return 0;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n;""", stem)


def keys(driver, *seq) -> None:
    ActionChains(driver).send_keys(*seq).perform()


def focused(driver) -> str:
    """A short description of the focused element: its id, else tag.class[aria-label]."""
    return driver.execute_script("""
        const e = document.activeElement;
        const label = e.getAttribute('aria-label') || '';
        return e.id || `${e.tagName.toLowerCase()}.${[...e.classList].join('.')}[${label}]`;""")


def tab_to(driver, match, limit: int = 80) -> str:
    """Press Tab until the focused element's description contains `match` (the element is reachable by keys),
    and check that the focus is visible (an outline)."""
    for _ in range(limit):
        keys(driver, Keys.TAB)
        now = focused(driver)
        if match in now:
            outline = driver.execute_script("const s = getComputedStyle(document.activeElement);"
                                            "return s.outlineStyle + ' ' + s.outlineWidth")
            assert not outline.startswith("none"), (now, outline)
            return now
    raise AssertionError(f"{match} not reachable with Tab (last focus: {focused(driver)})")


def login(d, server) -> None:
    """Open the page logged in (the tab's token, or typed in)."""
    d.get(server.base + "/")
    wait(d, lambda d: d.find_element(By.ID, "app").is_displayed() or d.find_element(By.ID, "login").is_displayed())
    time.sleep(0.3)
    if not d.find_element(By.ID, "app").is_displayed():
        d.find_element(By.ID, "token").send_keys(TOKEN, Keys.ENTER)
    wait(d, lambda d: d.find_element(By.ID, "app").is_displayed(), what="app shown")


def wait_job_end(d, timeout: float = 300) -> str:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        state = d.find_element(By.CSS_SELECTOR, "#job-list li.selected .state").text
        if state in ("succeeded", "failed", "canceled"):
            return state
        time.sleep(0.2)
    return state


