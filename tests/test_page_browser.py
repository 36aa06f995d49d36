"""The operator page in a real browser: Debian's Chromium, headless, driven by Selenium (Debian's chromium-driver),
against the real server with the demo pack. Screenshots of each step go to tests/out/screenshots/.

The tests share one server and one browser and run in file order (each leaves the page logged in).
"""
from __future__ import annotations

import functools
import json
import http.server
import shutil
import threading
import time
import zipfile

import numpy as np
import pytest
import soundfile as sf

from page_support import SHOTS, finished_long_job
from test_service_support import ROOT, TOKEN, Server

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")
CLIP = ROOT / "examples" / "dialog_over_music.flac"
MAX_UPLOAD_MB, MAX_DURATION_S = 20, 600  # small caps, so the page's own checks can be tried with small files


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("page") / "data", None, SPARK_DEMO_PACK="1", SPARK_ALLOW_PRIVATE_URLS=1,
                 SPARK_MAX_UPLOAD_MB=MAX_UPLOAD_MB, SPARK_MAX_DURATION_S=MAX_DURATION_S).start()
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
    # The limits come from the catalogue and are shown before anything is chosen.
    assert d.find_element(By.ID, "limits").text == "Up to 20.0 MB and 10 min per file."
    shot(d, "03-logged-in")

    # The demo pack cannot make drums/bass/other: greyed out with the reason, not offered.
    for stem in ("drums", "bass", "other"):
        box = d.find_element(By.CSS_SELECTOR, f'#stems input[value="{stem}"]')
        assert not box.is_enabled() and not box.is_selected()
        assert "the installed pack lacks" in d.find_element(By.ID, f"why-{stem}").text
    assert d.find_element(By.CSS_SELECTOR, '#stems input[value="vocals"]').is_selected()

    # A file that is not media, dropped on the drop zone: refused with the server's reason, in plain words.
    d.execute_script("""
        const dt = new DataTransfer();
        dt.items.add(new File(['this is not audio at all\\n'.repeat(100)], 'notes.wav'));
        document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));""")
    assert d.find_element(By.ID, "drop-text").text.startswith("notes.wav")
    d.find_element(By.ID, "send").click()
    wait(d, lambda d: visible_text(d, "#submit-msg").startswith("Refused:"), what="refused message")
    assert "decode" in visible_text(d, "#submit-msg") or "format" in visible_text(d, "#submit-msg")
    assert "Value error" not in visible_text(d, "#submit-msg")
    shot(d, "04-bad-file")

    # Too big / too long for this server: refused by the page before any upload (the server sees no job).
    big, long_ = tmp_path / "big.wav", tmp_path / "long.wav"
    sf.write(str(big), np.zeros((int(MAX_UPLOAD_MB * 1048576 / 4) + 44100, 2), np.int16), 44100)
    sf.write(str(long_), np.zeros(8000 * (MAX_DURATION_S + 60), np.int16), 8000)
    for path, words in ((big, "this server takes files up to 20.0 MB"),
                        (long_, "lasts 11 min; this server takes up to 10 min")):
        d.find_element(By.ID, "file").send_keys(str(path))
        d.find_element(By.ID, "send").click()
        wait(d, lambda d, w=words: w in visible_text(d, "#submit-msg"), what=f"refused before upload: {words}")
    with server.client() as c:
        assert c.get("/jobs").json()["jobs"] == []
    shot(d, "04b-too-long")

    # Upload the example clip; follow the progress to 100 %, with plain stage names and the input's facts.
    d.find_element(By.ID, "file").send_keys(str(CLIP))
    d.find_element(By.ID, "send").click()
    wait(d, lambda d: d.find_element(By.ID, "detail").is_displayed(), what="job detail")
    seen, stages, t0, running_shot = set(), set(), time.monotonic(), False
    while time.monotonic() - t0 < 300:
        state = d.find_element(By.CSS_SELECTOR, "#job-list li .state").text
        seen.add(round(float(d.find_element(By.ID, "d-bar").get_attribute("value")), 2))
        stages.add(d.find_element(By.ID, "d-state").text.split(" · ")[0])
        if state == "running" and not running_shot and 0 < max(seen) < 1:
            wait(d, lambda d: drawn_pixels(d, "original") > 500, what="input waveform while running")
            assert "8 s, 44100 Hz, 2 channels" in d.find_element(By.ID, "d-facts").text
            shot(d, "05-running")
            running_shot = True
        if state in ("succeeded", "failed", "canceled"):
            break
        time.sleep(0.2)
    assert state == "succeeded", visible_text(d, "#d-error")
    assert float(d.find_element(By.ID, "d-bar").get_attribute("value")) == 1.0
    assert any(0 < v < 1 for v in seen), seen  # progress arrived live, not just at the end
    assert any(s.startswith("Separating vocals: model") for s in stages), stages
    assert not any("Kim_" in s or "demucs" in s or s.islower() for s in stages), stages  # no engine words
    job_id = d.find_element(By.CSS_SELECTOR, "#job-list li").get_attribute("id")[4:]
    print(f"separation of the example clip seen by the page: {time.monotonic() - t0:.1f} s; stages {stages}")

    # Every waveform drawn: the input's and each stem's canvas is not blank; each is a labelled slider.
    for stem in ("original", "vocals", "instrumental"):
        wait(d, lambda d, s=stem: drawn_pixels(d, s) > 500, what=f"{stem} waveform")
    canvas = d.find_element(By.CSS_SELECTOR, '.track[data-stem="vocals"] canvas')
    assert canvas.get_attribute("role") == "slider" and "vocals waveform" in canvas.get_attribute("aria-label")
    wait(d, lambda d: "succeeded" in d.find_element(By.ID, "d-log").text, what="job log")
    shot(d, "06-done-waveforms")

    # Play: every stem streams from its URL (no blob) and their times advance together; solo mutes the others.
    srcs = d.execute_script("return [...document.querySelectorAll('.track audio')].map(a => a.currentSrc)")
    assert srcs and all(s.startswith(server.base + f"/jobs/{job_id}/stems/") for s in srcs), srcs
    d.find_element(By.ID, "play").click()
    time.sleep(1.5)
    times = d.execute_script("return [...document.querySelectorAll('.track audio')].map(a => a.currentTime)")
    assert len(times) == 2 and min(times) > 0.5 and max(times) - min(times) < 0.3, times
    solo = d.find_element(By.CSS_SELECTOR, '.track[data-stem="vocals"] button.solo')
    assert solo.get_attribute("aria-pressed") == "false"
    solo.click()
    assert solo.get_attribute("aria-pressed") == "true" and solo.get_attribute("aria-label") == "Solo vocals"
    muted = d.execute_script("return Object.fromEntries([...document.querySelectorAll('.track audio')]"
                             ".map(a => [a.closest('.track').dataset.stem, a.muted]))")
    assert muted == {"vocals": False, "instrumental": True}
    clock = d.find_element(By.ID, "time").text
    assert clock.endswith("/ 0:08.0") and not clock.startswith("0:00.0"), clock
    shot(d, "07-playing-solo-vocals")
    d.find_element(By.ID, "play").click()  # pause

    # Download the zip: a plain link the browser downloads itself (the download cookie, no token in the URL).
    zip_link = d.find_element(By.ID, "d-zip")
    assert zip_link.get_attribute("href") == server.base + f"/jobs/{job_id}/result.zip"
    zip_link.click()
    zip_path = wait(d, lambda d: next((p for p in downloads.glob("*.zip")), None), what="zip download")
    wait(d, lambda d: not list(downloads.glob("*.crdownload")), what="download complete")
    with zipfile.ZipFile(zip_path) as z:
        names = sorted(z.namelist())
        assert names == ["dialog_over_music_instrumental.wav", "dialog_over_music_vocals.wav"]
        z.extractall(tmp_path / "unzipped")
    for name in names:
        info = sf.info(str(tmp_path / "unzipped" / name))
        assert info.samplerate == 44100 and info.frames == 352800 and info.channels == 2
    # The cookie is HttpOnly (no script reads it) and scoped to /jobs.
    assert "spark_media" not in d.execute_script("return document.cookie")
    cookies = d.execute_cdp_cmd("Network.getCookies", {"urls": [server.base + "/jobs/x"]})["cookies"]
    cookie = next(c for c in cookies if c["name"] == "spark_media")
    assert cookie["httpOnly"] and cookie["path"] == "/jobs" and cookie["sameSite"] == "Strict", cookie
    assert 0 < cookie["expires"] - time.time() <= 900

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
    # failure injected into the real worker), and the page says why, once.
    def submit_clip() -> str:
        before = {li.get_attribute("id") for li in d.find_elements(By.CSS_SELECTOR, "#job-list li")}
        d.find_element(By.ID, "file").send_keys(str(CLIP))
        d.find_element(By.ID, "send").click()
        return wait(d, lambda d: next((li.get_attribute("id")[4:] for li in
                                       d.find_elements(By.CSS_SELECTOR, "#job-list li.selected")
                                       if li.get_attribute("id") not in before), None), what="new job selected")

    first, second = submit_clip(), submit_clip()
    subs = [d.find_element(By.CSS_SELECTOR, f"#job-{j} .sub").text for j in (first, second)]
    assert subs[0] != subs[1] and all("mdx23 · vocals, instrumental" in x for x in subs), subs  # two of one file
    for p in (server.data_dir / "jobs" / second).glob("input*"):
        p.unlink()
    d.find_element(By.CSS_SELECTOR, f"#job-{first} button.open").click()
    wait(d, lambda d: d.find_element(By.ID, "d-cancel").is_displayed(), what="cancel button")
    d.find_element(By.ID, "d-cancel").click()
    wait(d, lambda d: "canceled" in visible_text(d, "#d-error"), what="canceled message")
    shot(d, "09-canceled")
    d.find_element(By.CSS_SELECTOR, f"#job-{second} button.open").click()
    wait(d, lambda d: "The job failed: the input file is gone" in visible_text(d, "#d-error"), what="failure")
    assert "failed" in d.find_element(By.CSS_SELECTOR, f"#job-{second} .state").text
    wait(d, lambda d: "failed: the input file is gone" in d.find_element(By.ID, "d-log").text, what="log")
    assert d.find_element(By.ID, "d-log").text.count("queued:") == 1  # each log line shown once
    wait(d, lambda d: not d.find_element(By.ID, "submit-msg").is_displayed(), what="the Queued note gone")
    outside_log = d.execute_script("return document.getElementById('app').innerText.replace("
                                   "document.getElementById('d-log').innerText, '')")
    assert outside_log.count("the input file is gone") == 1, outside_log  # one message per failure
    shot(d, "10-failed")

    # Delete asks first; "Keep it" keeps it, "Delete" deletes.
    d.find_element(By.CSS_SELECTOR, f"#job-{job_id} button.open").click()
    wait(d, lambda d: d.find_element(By.ID, "d-delete").is_displayed(), what="delete button")
    d.find_element(By.ID, "d-delete").click()
    assert "Delete dialog_over_music and its stems" in visible_text(d, "#d-confirm")
    shot(d, "11a-delete-confirm")
    d.find_element(By.ID, "d-keep").click()
    assert not d.find_element(By.ID, "d-confirm").is_displayed() and d.find_elements(By.ID, f"job-{job_id}")
    d.find_element(By.ID, "d-delete").click()
    d.find_element(By.ID, "d-really").click()
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


def test_eta_is_withheld_until_steady_then_moves_slowly(server, browser):
    """The page's ETA over the server's raw estimates (one every 2 s): the issue's swing (30 s -> 268 s within
    18 s on a 150 s file) shows no number; a steady run shows a range that changes little. And the server's
    validation messages lose the validator's wording."""
    d = browser
    login(d, server)
    words = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.all([import('/ui/jobs.js'), import('/ui/util.js')]).then(([jobs, util]) => {
          const { smoothEta, etaWords } = jobs, { humanMessage } = util;
          const run = (raws) => { let e = null; return raws.map((r, i) => { e = smoothEta(e, r, 2 * i);
                                                                        return etaWords(e, 2 * i); }); };
          done({ swing: run([30, 45, 70, 110, 150, 190, 220, 245, 260, 268]), plain: [
                   'options: Value error, stems: vocals not made by recipe cinematic',
                   `sample_rate: Input should be 'native' or 44100`].map(humanMessage),
                 steady: run([600, 560, 640, 570, 590, 610, 560, 580, 600, 540, 620, 570]) });
        });""")
    assert words["plain"] == ["stems: vocals not made by recipe cinematic",  # no validator wording
                              "sample rate must be 'native' or 44100"], words["plain"]
    assert set(words["swing"][:8]) == {"estimating the time left…"}, words  # no number while it climbs
    shown = [w for w in words["steady"] if w != "estimating the time left…"]
    assert len(shown) >= 6 and len(set(shown)) <= 2, words  # a range, not a number every 2 s
    assert all(w.startswith("about ") and w.endswith(" min left") for w in shown), shown


def test_url_job_is_titled_by_its_file_name(server, browser):
    d = browser
    login(d, server)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(CLIP.parent))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        d.find_element(By.ID, "url").send_keys(f"http://127.0.0.1:{web.server_address[1]}/{CLIP.name}?v=1")
        d.find_element(By.ID, "send").click()
        wait(d, lambda d: d.find_element(By.ID, "detail").is_displayed(), what="job detail")
        li = d.find_element(By.CSS_SELECTOR, "#job-list li.selected")
        job_id = li.get_attribute("id")[4:]
        names = {li.find_element(By.CSS_SELECTOR, ".name").text, d.find_element(By.ID, "d-title").text}
        assert names <= {CLIP.name, CLIP.stem} and job_id[:8] not in str(names), names
        d.find_element(By.ID, "d-cancel").click()
        wait(d, lambda d: "canceled" in visible_text(d, "#d-error"), what="canceled")
        web.shutdown()
    d.find_element(By.ID, "d-delete").click()
    d.find_element(By.ID, "d-really").click()
    wait(d, lambda d: not d.find_elements(By.ID, f"job-{job_id}"), what="job removed")


def test_cinematic_from_the_page(server, browser):
    d = browser
    login(d, server)
    Select(d.find_element(By.ID, "recipe")).select_by_value("cinematic")
    boxes = {b.get_attribute("value"): b for b in d.find_elements(By.CSS_SELECTOR, "#stems input")}
    assert list(boxes) == ["dialog", "music", "effects", "background", "background2"]
    assert all(b.is_enabled() and b.is_selected() for b in boxes.values())
    assert d.find_element(By.ID, "opt-high_quality").get_attribute("type") == "checkbox"  # the film option
    boxes["background2"].click()
    d.find_element(By.CSS_SELECTOR, "#submit details summary").click()  # output and surround options
    Select(d.find_element(By.ID, "opt-format")).select_by_value("flac")
    Select(d.find_element(By.ID, "opt-layout")).select_by_value("stereo")
    shot(d, "13-cinematic-form")
    d.find_element(By.ID, "file").send_keys(str(CLIP))
    d.find_element(By.ID, "send").click()
    wait(d, lambda d: d.find_element(By.ID, "detail").is_displayed(), what="job detail")
    stages = set()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 300:
        stages.add(d.find_element(By.ID, "d-state").text.split(" · ")[0])
        if d.find_element(By.CSS_SELECTOR, "#job-list li.selected .state").text in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert not visible_text(d, "#d-error"), visible_text(d, "#d-error")
    assert "Separating dialog, music and effects: model 1 of 1" in stages, stages
    assert not any("97d170e1" in s for s in stages), stages
    for stem in ("dialog", "music", "effects", "background"):
        wait(d, lambda d, s=stem: drawn_pixels(d, s) > 300, what=f"{stem} waveform")
    facts = d.find_element(By.ID, "d-facts").text
    assert "cinematic, layout stereo" in facts and "flac" in facts, facts
    shot(d, "14-cinematic-done")
    job_id = d.find_element(By.CSS_SELECTOR, "#job-list li.selected").get_attribute("id")[4:]
    with server.client() as c:
        job = c.get(f"/jobs/{job_id}").json()
    assert job["options"]["stems"] == ["dialog", "music", "effects", "background"]
    assert job["options"]["format"] == "flac" and job["options"]["layout"] == "stereo"


def test_reload_restores_the_open_job_and_the_form(server, browser):
    d = browser
    selected = d.find_element(By.CSS_SELECTOR, "#job-list li.selected").get_attribute("id")
    assert Select(d.find_element(By.ID, "recipe")).first_selected_option.get_attribute("value") == "cinematic"
    d.refresh()
    wait(d, lambda d: d.find_element(By.ID, "detail").is_displayed(), what="the open job after a reload")
    assert d.find_element(By.CSS_SELECTOR, "#job-list li.selected").get_attribute("id") == selected
    assert Select(d.find_element(By.ID, "recipe")).first_selected_option.get_attribute("value") == "cinematic"
    assert not d.find_element(By.CSS_SELECTOR, '#stems input[value="background2"]').is_selected()
    assert d.find_element(By.CSS_SELECTOR, '#stems input[value="dialog"]').is_selected()
    assert Select(d.find_element(By.ID, "opt-format")).first_selected_option.get_attribute("value") == "flac"
    shot(d, "15-after-reload")


def test_banner_keeps_the_layout(server, browser):
    d = browser
    detail = d.find_element(By.ID, "detail").rect
    d.execute_cdp_cmd("Network.enable", {})
    d.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, "latency": 0, "downloadThroughput": -1,
                                                           "uploadThroughput": -1})
    try:
        wait(d, lambda d: visible_text(d, "#banner").startswith("Lost connection to the server"), 15, "banner")
        assert "Failed to fetch" not in d.find_element(By.TAG_NAME, "body").text
        moved = d.find_element(By.ID, "detail").rect
        col = d.find_element(By.CSS_SELECTOR, "main .col").rect
        # still two columns: the detail panel beside the form, not pushed below it
        assert moved["x"] == detail["x"] and moved["x"] > col["x"] + col["width"] - 1, (detail, moved, col)
        form = d.find_element(By.ID, "submit").rect
        assert abs(moved["y"] - form["y"]) < 2, (moved, form)  # side by side, below the banner
        shot(d, "16-offline-banner")
    finally:
        d.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
                                                               "downloadThroughput": -1, "uploadThroughput": -1})
    wait(d, lambda d: not d.find_element(By.ID, "banner").is_displayed(), 15, "banner gone once back")


def test_keyboard_only_flow(server, browser, downloads):
    """Log in, choose a file, send, open the job, play, solo, seek, download and delete with keys only."""
    d = browser
    d.get(server.base + "/")
    d.execute_script("sessionStorage.clear()")
    d.get(server.base + "/")
    wait(d, lambda d: d.find_element(By.ID, "token").is_displayed(), what="login")
    tab_to(d, "token")
    keys(d, TOKEN, Keys.ENTER)
    wait(d, lambda d: d.find_element(By.ID, "app").is_displayed(), what="app shown")
    tab_to(d, "file")  # the file input takes focus (its label is the visible button)
    d.switch_to.active_element.send_keys(str(CLIP))  # what the file chooser would return
    assert d.find_element(By.ID, "drop-text").text.startswith("dialog_over_music.flac")
    tab_to(d, "recipe")
    keys(d, Keys.HOME)  # the first recipe: mdx23
    tab_to(d, "send")
    keys(d, Keys.ENTER)
    wait(d, lambda d: d.find_element(By.ID, "detail").is_displayed(), what="job detail")
    assert wait_job_end(d) == "succeeded"
    job_id = d.find_element(By.CSS_SELECTOR, "#job-list li.selected").get_attribute("id")[4:]
    # open another job and come back to this one with the keyboard
    d.find_element(By.TAG_NAME, "body").click()
    d.execute_script("document.activeElement.blur()")
    label = tab_to(d, "button.open")
    keys(d, Keys.ENTER)
    opened = d.find_element(By.CSS_SELECTOR, "#job-list li.selected").get_attribute("id")[4:]
    assert opened == job_id, label  # the newest job is first in the list
    assert d.find_element(By.CSS_SELECTOR, f"#job-{job_id} button.open").get_attribute("aria-current") == "true"
    tab_to(d, "play")
    keys(d, Keys.ENTER)
    wait(d, lambda d: d.find_element(By.ID, "play").get_attribute("aria-pressed") == "true", what="playing")
    tab_to(d, "[Solo vocals]")
    keys(d, Keys.SPACE)
    assert d.find_element(By.CSS_SELECTOR, '.track[data-stem="vocals"] button.solo').get_attribute(
        "aria-pressed") == "true"
    tab_to(d, "[vocals waveform")
    before = d.execute_script("return document.querySelector('.track audio').currentTime")
    keys(d, Keys.END)
    after = d.execute_script("return document.querySelector('.track audio').currentTime")
    assert after > before + 2 and after > 6, (before, after)
    assert "of 0:08.0" in d.switch_to.active_element.get_attribute("aria-valuetext")
    shot(d, "17-keyboard-seek")
    for f in downloads.glob("*"):
        f.unlink()
    tab_to(d, "[Download vocals]")
    keys(d, Keys.ENTER)
    wav = wait(d, lambda d: next((p for p in downloads.glob("*.wav")), None), what="stem download")
    wait(d, lambda d: not list(downloads.glob("*.crdownload")), what="download complete")
    assert sf.info(str(wav)).frames == 352800
    tab_to(d, "d-delete")
    keys(d, Keys.ENTER)
    assert focused(d) == "d-keep"  # the confirmation takes the focus, on the safe choice
    ActionChains(d).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT).perform()
    assert focused(d) == "d-really"
    keys(d, Keys.ENTER)
    wait(d, lambda d: not d.find_elements(By.ID, f"job-{job_id}"), what="job removed")
    shot(d, "18-keyboard-deleted")


def test_a_45_minute_stem_streams_with_a_bounded_heap(server, browser):
    d = browser
    job_id = finished_long_job(server.data_dir, 45 * 60)
    login(d, server)
    # the download cookie gone (e.g. it ran out while the machine slept): the player renews it and plays
    d.execute_cdp_cmd("Network.deleteCookies", {"name": "spark_media", "url": server.base + "/jobs/"})
    wait(d, lambda d: d.find_elements(By.ID, f"job-{job_id}"), what="the long job listed")
    d.find_element(By.CSS_SELECTOR, f"#job-{job_id} button.open").click()
    wait(d, lambda d: d.execute_script("const a = document.querySelector('.track audio');"
                                       "return a && a.readyState >= 1 && a.duration") , 60, "metadata")
    assert abs(d.execute_script("return document.querySelector('.track audio').duration") - 2700) < 1
    statuses = [(m["params"]["response"]["url"], m["params"]["response"]["status"]) for m in
                (json.loads(e["message"])["message"] for e in d.get_log("performance"))
                if m["method"] == "Network.responseReceived"]  # the network log so far; from here on, play
    stem_url = server.base + f"/jobs/{job_id}/stems/vocals"
    assert (stem_url, 401) in statuses, statuses
    refused = statuses.index((stem_url, 401))
    assert (server.base + "/media-cookie", 204) in statuses[refused:], statuses  # renewed after the refusal
    d.find_element(By.ID, "play").click()
    heap = []
    for at in (0, 600, 1800, 2690, 60, 1200):
        d.execute_script("const a = document.querySelector('.track audio'); a.currentTime = arguments[0];", at)
        wait(d, lambda d, t=at: d.execute_script("const a = document.querySelector('.track audio');"
                                                 "return !a.seeking && a.currentTime >= arguments[0] + 0.3", t),
             60, f"playing from {at} s")
        heap.append(d.execute_cdp_cmd("Runtime.getHeapUsage", {})["usedSize"])
    src = d.execute_script("return document.querySelector('.track audio').currentSrc")
    assert src == server.base + f"/jobs/{job_id}/stems/vocals"  # streamed from the server, not a blob
    assert max(heap) < 300 * 2**20, heap
    # The network log: the stem came in Range requests, a small part of its 952 MB (no whole-file fetch).
    events = [json.loads(e["message"])["message"] for e in d.get_log("performance")]
    ids = {e["params"]["requestId"]: e["params"]["request"]["headers"] for e in events
           if e["method"] == "Network.requestWillBeSent" and e["params"]["request"]["url"].endswith("/stems/vocals")}
    ranges = [h.get("Range") or h.get("range") for h in ids.values()]
    got = sum(e["params"]["dataLength"] for e in events
              if e["method"] == "Network.dataReceived" and e["params"]["requestId"] in ids)
    assert ids and all(r and r.startswith("bytes=") for r in ranges), ranges
    assert got < 200 * 2**20, got
    print(f"45-minute float WAV stem (952 MB): JS heap while playing and seeking {max(heap) / 2**20:.1f} MB max; "
          f"{len(ids)} Range requests, {got / 2**20:.1f} MB received")
    shot(d, "19-long-stem-playing")
    d.find_element(By.ID, "play").click()
    with server.client() as c:
        assert c.delete(f"/jobs/{job_id}").status_code == 204
