"""The operator page in a real browser: Debian's Chromium, headless, driven by Selenium (Debian's chromium-driver),
against the real server with the demo pack. Screenshots of each step go to tests/out/screenshots/.
"""
from __future__ import annotations

import shutil
import time
import zipfile

import pytest
import soundfile as sf

from testkit.service import ROOT, TOKEN, Server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")
SHOTS = ROOT / "tests" / "out" / "screenshots"
CLIP = ROOT / "examples" / "dialog_over_music.flac"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("page") / "data", None, SPARK_DEMO_PACK="1").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
                "--no-first-run", "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
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


def test_operator_page_end_to_end(server, browser, downloads, tmp_path):
    d = browser
    d.get(server.base + "/")
    shot(d, "01-login")

    # A wrong token: a clear message, nothing opens.
    d.find_element(By.ID, "token").send_keys("not-the-token")
    d.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait(d, lambda d: "Wrong token" in visible_text(d, "#login-msg"), what="wrong-token message")
    assert not d.find_element(By.ID, "app").is_displayed()
    shot(d, "02-wrong-token")

    # The right token: the app opens; the token stays in this tab's session storage, not in the URL.
    d.find_element(By.ID, "token").clear()
    d.find_element(By.ID, "token").send_keys(TOKEN)
    d.find_element(By.CSS_SELECTOR, "#login-form button").click()
    wait(d, lambda d: d.find_element(By.ID, "app").is_displayed(), what="app shown")
    wait(d, lambda d: "DEMO pack" in d.find_element(By.ID, "server-status").text, what="status line")
    assert d.execute_script("return sessionStorage.getItem('spark-token')") == TOKEN
    assert TOKEN not in d.current_url and d.execute_script("return localStorage.length") == 0
    shot(d, "03-logged-in")

    # A file that is not media, dropped on the drop zone: refused with the server's reason.
    d.execute_script("""
        const dt = new DataTransfer();
        dt.items.add(new File(['this is not audio at all\\n'.repeat(100)], 'notes.wav'));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));""")
    assert d.find_element(By.ID, "drop-text").text.startswith("notes.wav")
    d.find_element(By.ID, "send").click()
    wait(d, lambda d: visible_text(d, "#submit-msg").startswith("Refused:"), what="refused message")
    assert "decode" in visible_text(d, "#submit-msg") or "format" in visible_text(d, "#submit-msg")
    shot(d, "04-bad-file")

    # Upload the example clip; follow the progress to 100 %.
    d.find_element(By.ID, "file").send_keys(str(CLIP))
    d.find_element(By.ID, "send").click()
    wait(d, lambda d: d.find_element(By.ID, "detail").is_displayed(), what="job detail")
    seen, t0, running_shot = set(), time.monotonic(), False
    while time.monotonic() - t0 < 300:
        state = d.find_element(By.CSS_SELECTOR, "#job-list li .state").text
        seen.add(round(float(d.find_element(By.ID, "d-bar").get_attribute("value")), 2))
        if state == "running" and not running_shot and 0 < max(seen) < 1:
            shot(d, "05-running")
            running_shot = True
        if state in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.2)
    assert state == "succeeded", visible_text(d, "#d-error")
    assert float(d.find_element(By.ID, "d-bar").get_attribute("value")) == 1.0
    assert any(0 < v < 1 for v in seen), seen  # progress arrived live, not just at the end
    job_id = d.find_element(By.CSS_SELECTOR, "#job-list li").get_attribute("id")[4:]
    print(f"separation of the example clip seen by the page: {time.monotonic() - t0:.1f} s")

    # Every waveform drawn: the input's and each stem's canvas is not blank.
    for stem in ("original", "vocals", "instrumental"):
        wait(d, lambda d, s=stem: drawn_pixels(d, s) > 500, what=f"{stem} waveform")
    wait(d, lambda d: visible_text(d, "#player-msg") == "", what="audio loaded")
    wait(d, lambda d: "succeeded" in d.find_element(By.ID, "d-log").text, what="job log")
    shot(d, "06-done-waveforms")

    # Play: every stem's time advances together; solo one stem mutes the others.
    d.find_element(By.ID, "play").click()
    time.sleep(1.5)
    times = d.execute_script("return [...document.querySelectorAll('.track audio')].map(a => a.currentTime)")
    assert len(times) == 2 and min(times) > 0.5 and max(times) - min(times) < 0.3, times
    d.find_element(By.CSS_SELECTOR, '.track[data-stem="vocals"] button.solo').click()
    muted = d.execute_script("return Object.fromEntries([...document.querySelectorAll('.track audio')]"
                             ".map(a => [a.closest('.track').dataset.stem, a.muted]))")
    assert muted == {"vocals": False, "instrumental": True}
    clock = d.find_element(By.ID, "time").text
    assert clock.endswith("/ 0:08.0") and not clock.startswith("0:00.0"), clock
    shot(d, "07-playing-solo-vocals")
    d.find_element(By.ID, "play").click()  # pause

    # Download the zip (a blob fetched with the token) and check its stems.
    d.find_element(By.ID, "d-zip").click()
    zip_path = wait(d, lambda d: next((p for p in downloads.glob("*.zip")), None), what="zip download")
    wait(d, lambda d: not list(downloads.glob("*.crdownload")), what="download complete")
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(z.namelist())
        assert names == ["dialog_over_music_instrumental.wav", "dialog_over_music_vocals.wav"]
        z.extractall(tmp_path / "unzipped")
    for name in names:
        info = sf.info(str(tmp_path / "unzipped" / name))
        assert info.samplerate == 44100 and info.frames == 352800 and info.channels == 2

    # A phone-sized screen: nothing wider than the viewport.
    d.set_window_size(390, 844)
    time.sleep(0.5)
    assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(d, "08-phone")
    d.execute_script("document.getElementById('detail').scrollIntoView()")
    assert d.find_element(By.CSS_SELECTOR, '.track[data-stem="vocals"] canvas').size["width"] <= 390
    shot(d, "08-phone-player")
    d.set_window_size(1280, 900)

    # Two more jobs: cancel the first while it runs; the second fails (its input vanishes while it waits, a
    # failure injected into the real worker), and the page says why.
    def submit_clip() -> str:
        before = {li.get_attribute("id") for li in d.find_elements(By.CSS_SELECTOR, "#job-list li")}
        d.find_element(By.ID, "file").send_keys(str(CLIP))
        d.find_element(By.ID, "send").click()
        return wait(d, lambda d: next((li.get_attribute("id")[4:] for li in
                                       d.find_elements(By.CSS_SELECTOR, "#job-list li.selected")
                                       if li.get_attribute("id") not in before), None), what="new job selected")

    first, second = submit_clip(), submit_clip()
    for p in (server.data_dir / "jobs" / second).glob("input*"):
        p.unlink()
    d.find_element(By.ID, f"job-{first}").click()
    wait(d, lambda d: d.find_element(By.ID, "d-cancel").is_displayed(), what="cancel button")
    d.find_element(By.ID, "d-cancel").click()
    wait(d, lambda d: "canceled" in visible_text(d, "#d-error"), what="canceled message")
    shot(d, "09-canceled")
    d.find_element(By.ID, f"job-{second}").click()
    wait(d, lambda d: "The job failed: the input file is gone" in visible_text(d, "#d-error"), what="failure")
    assert "failed" in d.find_element(By.CSS_SELECTOR, f"#job-{second} .state").text
    wait(d, lambda d: "failed: the input file is gone" in d.find_element(By.ID, "d-log").text, what="log")
    assert d.find_element(By.ID, "d-log").text.count("queued:") == 1  # each log line shown once
    shot(d, "10-failed")
    d.find_element(By.ID, f"job-{job_id}").click()
    wait(d, lambda d: d.find_element(By.ID, "d-delete").is_displayed(), what="delete button")
    d.find_element(By.ID, "d-delete").click()
    wait(d, lambda d: not d.find_elements(By.ID, f"job-{job_id}"), what="job removed")
    with server.client() as c:
        assert c.get(f"/jobs/{job_id}").status_code == 404
    shot(d, "11-deleted")

    # A server that stops accepting the token (e.g. rotated): back to the login with a clear message.
    d.execute_script("sessionStorage.setItem('spark-token', 'rotated'); location.reload()")
    wait(d, lambda d: "Wrong token" in visible_text(d, "#login-msg"), what="token refused after reload")
    shot(d, "12-token-refused")

    # No script error and nothing the Content-Security-Policy had to block (expected: the refused requests).
    console = [e["message"] for e in d.get_log("browser")]
    assert any("401" in m for m in console)  # the console is read: the refused token was logged
    problems = [m for m in console if "Uncaught" in m or "Content Security Policy" in m]
    assert not problems, problems
