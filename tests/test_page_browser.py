"""The operator page in a real browser: Debian's Chromium, headless, driven by Selenium (Debian's chromium-driver),
against the real server with the demo pack. Screenshots of each step go to tests/out/screenshots/.

The tests share one server and one browser and run in file order. tests/test_page_access.py: keyboard, errors,
the ETA, film-length playback.
"""
from __future__ import annotations

import functools
import http.server
import threading
import time
import zipfile

import numpy as np
import pytest
import soundfile as sf

from browser_support import (MAX_DURATION_S, MAX_UPLOAD_MB, By, Select, chromium, drawn_pixels, login,
                             needs_chromium, page_server, shot, visible_text, wait)
from testkit.service import ROOT, TOKEN

pytestmark = needs_chromium
CLIP = ROOT / "examples" / "dialog_over_music.flac"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from page_server(tmp_path_factory)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    yield from chromium(downloads)

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
            assert "8 s, 44100 Hz, 2 channels" in d.find_element(By.ID, "d-facts").text  # 8.0 s
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
    d.find_element(By.CSS_SELECTOR, "#output-box summary").click()  # output and surround options
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
