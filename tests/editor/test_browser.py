"""The editor in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by
Selenium with the system driver, so nothing is downloaded. Skipped, with the reason, where they are missing.
The trio's page, and a voice set's (a tiny pop909 model with velocity: a POP909 song's piano edited, heard and
downloaded).

Set ``SCHMUBERT_EDITOR_SCREENSHOT=docs/editor.png`` to keep the screenshot the infill test takes (the README's
picture); otherwise it goes to the test's temporary folder. ``SCHMUBERT_EDITOR_CHECKPOINT`` runs the tests on
a real trio checkpoint (64-bar window) instead of the tiny random one, for a screenshot with music in it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from schmubert.checkpoints import load_model
from schmubert.editor.server import start_background
from schmubert.tokens import STEPS_PER_BAR, midi_to_tokens, tokens_to_notes

BAR = STEPS_PER_BAR
NAMES = ("melody", "bass", "drums")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
if CHROMIUM is None or DRIVER is None:
    pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def running(trio_model):
    checkpoint = os.environ.get("SCHMUBERT_EDITOR_CHECKPOINT")
    srv = start_background(load_model(checkpoint) if checkpoint else trio_model)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def open_page(driver, url):
    driver.get(url)
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))


def upload(driver, path: Path) -> None:
    driver.find_element(By.ID, "file").send_keys(str(path))


def messages(driver) -> list[str]:
    return [m.text for m in driver.find_elements(By.CSS_SELECTOR, "#messages .message")]


def page_tokens(driver) -> np.ndarray:
    tokens = driver.execute_script("return editor.panels[0].piece.tokens")
    return np.stack([np.asarray(tokens[n]) for n in NAMES], axis=1)


def drag(driver, start: dict, end: dict) -> None:
    actions = ActionBuilder(driver)
    mouse = actions.pointer_action
    mouse.move_to_location(int(start["x"]), int(start["y"])).pointer_down()
    mouse.move_to_location(int((start["x"] + end["x"]) / 2), int(start["y"]))
    mouse.move_to_location(int(end["x"]), int(end["y"])).pointer_up()
    actions.perform()


def test_infill_bass_bars_32_to_48_in_the_browser(browser, running, trio_file, downloads, tmp_path):
    original = midi_to_tokens(trio_file, "trio", 1024)
    open_page(browser, running.url)
    upload(browser, trio_file)
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return editor.panels[0].name") == trio_file.name)
    assert np.array_equal(page_tokens(browser), original)

    # drag across the bass lane from inside bar 32 to inside bar 47: the selection snaps to bars 32-48
    point = lambda step: browser.execute_script(f"return editor.panels[0].clientPoint({step}, 'bass')")
    drag(browser, point(32 * BAR + 8), point(47 * BAR + 8))
    assert browser.execute_script("return editor.panels[0].selection") == [
        {"track": "bass", "start": 32 * BAR, "end": 48 * BAR}]

    steps = browser.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys("16")
    browser.find_element(By.ID, "diffuse").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "status").text.startswith("done"))
    shot = tmp_path / "editor.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:4] == b"\x89PNG"
    if os.environ.get("SCHMUBERT_EDITOR_SCREENSHOT"):
        shutil.copy(shot, os.environ["SCHMUBERT_EDITOR_SCREENSHOT"])

    result = page_tokens(browser)
    inside = np.zeros_like(result, dtype=bool)
    inside[32 * BAR:48 * BAR, 1] = True
    assert np.array_equal(result[~inside], original[~inside])  # outside the selection: unchanged
    assert (result[inside] < 90).all()  # inside: nothing left masked
    assert not np.array_equal(result[inside], original[inside])
    assert browser.execute_script("return editor.lastLatencyMs") > 0

    browser.find_element(By.ID, "download-midi").click()
    deadline = time.monotonic() + 20
    while not list(downloads.glob("*.mid")) and time.monotonic() < deadline:
        time.sleep(0.1)
    files = list(downloads.glob("*.mid"))
    assert [f.name for f in files] == [trio_file.stem + "-schmubert.mid"]
    downloaded = midi_to_tokens(files[0], "trio", 1024)
    before, after = tokens_to_notes(original, "trio"), tokens_to_notes(downloaded, "trio")
    notes = lambda n: {tuple(row) for row in n.tolist()}
    assert notes(after[0]) == notes(before[0]) and notes(after[2]) == notes(before[2])  # melody, drums
    outside_bass = lambda n: n[(n[:, 0] < 32 * BAR) | (n[:, 0] >= 48 * BAR)]
    assert notes(outside_bass(after[1])) == notes(outside_bass(before[1]))
    shown = tokens_to_notes(result, "trio")
    assert all(notes(a) == notes(b) for a, b in zip(after, shown, strict=True))  # the file is what the page shows

    # undo brings the original back, redo the take
    browser.find_element(By.ID, "undo").click()
    assert np.array_equal(page_tokens(browser), original)
    browser.find_element(By.ID, "redo").click()
    assert np.array_equal(page_tokens(browser), result)


def test_every_bad_file_shows_a_message_and_the_server_stays_up(browser, running, corpus):
    open_page(browser, running.url)
    for path in sorted((corpus / "bad-input").glob("*")):
        browser.execute_script("editor.clearMessages()")
        upload(browser, path)
        WebDriverWait(browser, 20).until(lambda d, name=path.name: any(m.startswith(name) for m in messages(d)))
        shown = [m for m in messages(browser) if m.startswith(path.name)]
        assert all("Traceback" not in m and "500" not in m for m in shown), shown
        assert httpx.get(f"{running.url}/api/info", timeout=10).status_code == 200
    kinds = browser.execute_script("return [...document.querySelectorAll('#messages .message')].map(m => m.className)")
    assert kinds  # the last file's messages are still on the page


def test_download_keeps_the_whole_song_and_the_track_pickers(browser, running, corpus, downloads):
    """A real 13-instrument, 89-bpm, 97-bar song: the pickers list its instruments, the other tracks are drawn
    grey, and the download is the whole song with only bars 8-12 of the bass replaced."""
    import pretty_midi

    path = corpus / "multitrack-songs" / "Aicha.mid"
    open_page(browser, running.url)
    upload(browser, path)
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return editor.panels[0].name") == path.name)
    assert browser.find_element(By.ID, "song-tracks").is_displayed()
    picked = browser.execute_script("return ['melody', 'bass', 'drums'].map(r => document.getElementById("
                                    "'pick-' + r).selectedOptions[0].textContent)")
    assert picked == ["Chant · GM 22 · #4", "Basse · GM 33 · #2", "Drums · drums · #10"]
    assert browser.execute_script("return editor.panels[0].background.length") > 1000
    browser.execute_script("editor.panels[0].setSelection([{track: 'bass', start: 128, end: 192}])")
    steps = browser.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys("8")
    browser.find_element(By.ID, "diffuse").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "status").text.startswith("done"))
    for old in downloads.glob("*.mid"):
        old.unlink()
    browser.find_element(By.ID, "download-midi").click()
    deadline = time.monotonic() + 20
    while not list(downloads.glob("Aicha*.mid")) and time.monotonic() < deadline:
        time.sleep(0.1)
    before, after = (pretty_midi.PrettyMIDI(str(p)) for p in (path, downloads / "Aicha-schmubert.mid"))
    assert after.get_tempo_changes()[1].tolist() == before.get_tempo_changes()[1].tolist()
    assert after.get_end_time() == before.get_end_time()
    t0, t1 = (before.tick_to_time(bar * 4 * before.resolution) for bar in (8, 12))
    key = lambda n: (n.pitch, round(n.start, 6), round(n.end, 6), n.velocity)  # noqa: E731
    named = lambda pm: {(i.name, i.program, i.is_drum): i for i in pm.instruments}  # noqa: E731
    a, b = named(before), named(after)
    assert a.keys() == b.keys() and len(after.instruments) == 13
    for k, inst in a.items():
        if k[0] != "Basse":
            assert sorted(map(key, inst.notes)) == sorted(map(key, b[k].notes)), k
    outside = lambda n: n.end <= t0 or n.start >= t1  # noqa: E731
    bass_before, bass_after = a[("Basse", 33, False)].notes, b[("Basse", 33, False)].notes
    assert {key(n) for n in bass_before if outside(n)} <= {key(n) for n in bass_after}
    assert {key(n) for n in bass_after if t0 <= n.start < t1} != {key(n) for n in bass_before if t0 <= n.start < t1}

    # choosing another instrument as the melody loads the song again with it
    Select(browser.find_element(By.ID, "pick-melody")).select_by_value("5")
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return editor.panels[0].song.assignment.melody")
                                     == 5)


def test_the_page_says_why_each_lane_was_chosen_and_when_a_take_changes_nothing(browser, running, crowded_song,
                                                                              monkeypatch):
    open_page(browser, running.url)
    upload(browser, crowded_song)
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return editor.panels[0].name") == crowded_song.name)
    said = messages(browser)
    assert any("melody = #5 'Lead' (GM 81" in m and "monophonic" in m for m in said)
    assert any("runners-up: #0 'Synth Bass'" in m for m in said) and not any("first one is used" in m for m in said)
    monkeypatch.setattr(running.server.config.app.state.sampler, "run", lambda job: job.x.copy())
    browser.execute_script("editor.panels[0].setSelection([{track: 'melody', start: 256, end: 320}])")
    browser.find_element(By.ID, "diffuse").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "status").text.startswith("done"))
    warned = [m for m in browser.find_elements(By.CSS_SELECTOR, "#messages .message.warning")]
    assert any("bars 16:20 came back unchanged" in m.text for m in warned)


def test_conditions_toolbar_sends_key_guidance_and_targets(browser, conditional_model, trio_file):
    """A model with attributes shows the Conditions toolbar; what the user sets there reaches the sampler."""
    srv = start_background(conditional_model)
    try:
        open_page(browser, srv.url)
        assert browser.find_element(By.ID, "conditions").is_displayed()
        defaults = httpx.get(f"{srv.url}/api/info", timeout=10).json()["defaults"]
        assert float(browser.find_element(By.ID, "top-p").get_attribute("value")) == defaults["top_p"]
        assert float(browser.find_element(By.ID, "cfg-scale").get_attribute("value")) == defaults["cfg_scale"]
        assert int(browser.find_element(By.ID, "repair").get_attribute("value")) == defaults["repair"]
        upload(browser, trio_file)
        WebDriverWait(browser, 20).until(lambda d: d.execute_script("return editor.panels[0].name") == trio_file.name)
        browser.execute_script("""
            window.sent = [];
            const fetch0 = window.fetch;
            window.fetch = (url, init) => {
              if (String(url).includes('/api/sample')) window.sent.push(JSON.parse(init.body));
              return fetch0(url, init);
            };""")
        Select(browser.find_element(By.ID, "key")).select_by_value("D:minor")
        for field, value in (("cfg-scale", "1.5"), ("onsets", "6"), ("top-p", "0.9"), ("steps", "4"),
                             ("repair", "2")):
            box = browser.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        browser.find_element(By.ID, "onsets-on").click()
        point = lambda step: browser.execute_script(f"return editor.panels[0].clientPoint({step}, 'melody')")
        drag(browser, point(8 * BAR + 8), point(11 * BAR + 8))
        browser.find_element(By.ID, "diffuse").click()
        WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "status").text.startswith("done"))
        body = browser.execute_script("return window.sent")[-1]
        assert body["key"] == "D:minor" and body["cfg_scale"] == 1.5 and body["top_p"] == 0.9
        assert body["repair"] == 2
        assert body["density"] == {"melody": 6} and body["mean_pitch"] == {}
        assert body["regions"] == [{"track": "melody", "start": 8 * BAR, "end": 12 * BAR}]
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def running_pop909(pop909_model):
    srv = start_background(pop909_model)
    yield srv
    srv.stop()


def lane_pixels(driver, lane: str, start: int, end: int) -> list[int]:
    """The canvas pixels of a lane between two steps (what the page shows there)."""
    return driver.execute_script(f"""
        const p = editor.panels[0], lane = p.lanes.find(l => l.track.name === '{lane}');
        const dpr = window.devicePixelRatio || 1, x0 = p.x({start}), x1 = p.x({end});
        const data = p.canvas.getContext('2d').getImageData(Math.round(x0 * dpr), Math.round(lane.top * dpr),
            Math.round((x1 - x0) * dpr), Math.round(lane.height * dpr)).data;
        return Array.from(data.filter((v, i) => i % 4 !== 3));""")


def test_a_pop909_song_piano_bars_diffused_heard_and_downloaded(browser, running_pop909, pop909_model, pop909_song,
                                                                downloads):
    """Issue 43's check, with a tiny random pop909 model with velocity: upload a POP909 song, select bars 8-16 x
    the piano (one lane for its six voices), diffuse, the roll redraws, play it (the synth sounds its notes at
    their velocities), download the whole song: only the piano's notes in those bars changed, with the model's
    velocities."""
    import symusic

    from schmubert.tokens import bin_to_velocity

    model = pop909_model
    names = [t.name for t in model.tracks]
    open_page(browser, running_pop909.url)
    upload(browser, pop909_song)
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return editor.panels[0].name") == pop909_song.name)
    assert browser.execute_script("return editor.panels[0].lanes.map(l => l.track.name)") == [
        "melody", "bridge", "piano"]
    picked = browser.execute_script("return ['melody', 'bridge', 'piano'].map(r => document.getElementById("
                                    "'pick-' + r).selectedOptions[0].textContent)")
    assert picked == ["MELODY · GM 0 · #0", "BRIDGE · GM 0 · #1", "PIANO · GM 0 · #2"]
    piece = browser.execute_script("return editor.panels[0].piece")
    x = np.stack([np.asarray(piece["tokens"][n]) for n in names], axis=1)
    velocity = np.stack([np.asarray(piece["velocity"][n]) for n in names], axis=1)
    onsets = [n[0] for n in piece["notes"]["piano"]]
    assert len(onsets) > 1.3 * len(set(onsets)) and len({n[3] for n in piece["notes"]["piano"]}) >= 4

    browser.execute_script("const p = editor.panels[0], lane = p.lanes.find(l => l.track.name === 'piano');"
                           "window.scrollBy(0, p.canvas.getBoundingClientRect().top + lane.top - 80)")
    point = lambda step: browser.execute_script(f"return editor.panels[0].clientPoint({step}, 'piano')")  # noqa
    drag(browser, point(8 * BAR + 8), point(15 * BAR + 8))
    assert browser.execute_script("return editor.panels[0].selection") == [
        {"track": "piano", "start": 8 * BAR, "end": 16 * BAR}]
    shown = lane_pixels(browser, "piano", 8 * BAR, 16 * BAR)
    steps = browser.find_element(By.ID, "steps")
    steps.clear()
    steps.send_keys("8")
    browser.find_element(By.ID, "diffuse").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "status").text.startswith("done"))
    assert lane_pixels(browser, "piano", 8 * BAR, 16 * BAR) != shown  # the roll redrew the new notes
    piece = browser.execute_script("return editor.panels[0].piece")
    y = np.stack([np.asarray(piece["tokens"][n]) for n in names], axis=1)
    drawn = np.stack([np.asarray(piece["velocity"][n]) for n in names], axis=1)
    inside = np.zeros_like(y, dtype=bool)
    inside[8 * BAR:16 * BAR, [k for k, n in enumerate(names) if n.startswith("piano.")]] = True
    assert np.array_equal(y[~inside], x[~inside]) and np.array_equal(drawn[~inside], velocity[~inside])
    assert not np.array_equal(y[inside], x[inside]) and (y[inside] < 90).all()
    new = [n for n in piece["notes"]["piano"] if 8 * BAR <= n[0] < 16 * BAR]
    assert len({n[3] for n in new}) >= 3 and {n[3] for n in new} <= set(bin_to_velocity(np.arange(1, 9)).tolist())

    # play from the selection: the synth sounds the new piano notes, each at its velocity's gain
    browser.find_element(By.ID, "play").click()
    WebDriverWait(browser, 20).until(lambda d: d.execute_script(
        "return editor.player.playing && editor.synth.ctx.state === 'running' && editor.synth.log.length >= 12"))
    heard = browser.execute_script("return editor.synth.log")
    browser.find_element(By.ID, "play").click()
    assert browser.execute_script("return editor.player.playing") is False
    first = [n for n in new if n[0] == min(m[0] for m in new)]
    assert any(p == n[2] and abs(v - n[3] / 100) < 1e-9 for p, v in heard for n in first)
    assert len({round(v, 4) for _, v in heard}) >= 2

    for old in downloads.glob("*.mid"):
        old.unlink()
    browser.find_element(By.ID, "download-midi").click()
    target = downloads / (pop909_song.stem + "-schmubert.mid")
    deadline = time.monotonic() + 20
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    data = target.read_bytes()
    song_id = browser.execute_script("return editor.panels[0].song.id")
    api = httpx.post(f"{running_pop909.url}/api/export/song", timeout=30, json={
        "song": song_id, "tokens": piece["tokens"], "velocity": piece["velocity"]})
    assert data == api.content  # the whole song as the server splices the page's take
    before, after = symusic.Score(str(pop909_song)), symusic.Score.from_midi(data)
    key = lambda t: sorted((n.time, n.duration, n.pitch, n.velocity) for n in t.notes)  # noqa: E731
    assert [key(t) for t in after.tracks[:2]] == [key(t) for t in before.tracks[:2]]  # melody, bridge
    assert [(t.time, t.qpm) for t in after.tempos] == [(t.time, t.qpm) for t in before.tempos]
    t0, t1 = 8 * 4 * before.ticks_per_quarter, 16 * 4 * before.ticks_per_quarter  # 4/4 bars from its first tick
    piano_before, piano_after = key(before.tracks[2]), key(after.tracks[2])
    assert [n for n in piano_after if n[0] >= t1] == [n for n in piano_before if n[0] >= t1]
    assert [n[0] for n in piano_after if n[0] < t0] == [n[0] for n in piano_before if n[0] < t0]
    changed = [n for n in piano_after if t0 <= n[0] < t1]
    assert changed != [n for n in piano_before if t0 <= n[0] < t1]
    assert {n[3] for n in changed} <= {n[3] for n in new} and len({n[3] for n in changed}) >= 3  # as shown


def test_bars_in_3_are_drawn_at_their_real_length(browser, pop909_meter_model, corpus, tmp_path):
    """A meter model shows POP909's 034.mid (in 3) in its slots: each 3/4 bar drawn three quarters as wide as a
    4/4 one (its PAD takes no width), a drag over bars selects their slots, and a take keeps the PAD."""
    path = corpus / "pop909" / "034.mid"
    srv = start_background(pop909_meter_model)
    try:
        open_page(browser, srv.url)
        upload(browser, path)
        WebDriverWait(browser, 20).until(lambda d: d.execute_script("return editor.panels[0].name") == path.name)
        p = "editor.panels[0]"
        lengths = browser.execute_script(f"return {p}.piece.layout.lengths")
        assert lengths[:3] == [6, 12, 12]
        assert browser.execute_script(f"return {p}.realSteps") == sum(lengths)
        px = browser.execute_script(f"return {p}.pxPerStep")
        width = browser.execute_script(f"return {p}.x(3 * 16) - {p}.x(2 * 16)")
        assert width == pytest.approx(12 * px)  # a 3/4 bar: 12 sixteenths wide, not 16
        assert browser.execute_script(f"return {p}.x(2 * 16) - {p}.x(16 + 12)") == pytest.approx(0)  # PAD
        browser.execute_script(f"const lane = {p}.lanes.find(l => l.track.name === 'piano');"
                               f"window.scrollBy(0, {p}.canvas.getBoundingClientRect().top + lane.top - 80)")
        point = lambda step: browser.execute_script(f"return {p}.clientPoint({step}, 'piano')")  # noqa: E731
        drag(browser, point(4 * BAR + 4), point(7 * BAR + 4))
        assert browser.execute_script(f"return {p}.selection") == [{"track": "piano", "start": 4 * BAR,
                                                                    "end": 8 * BAR}]
        before = browser.execute_script(f"return {p}.piece.tokens")
        steps = browser.find_element(By.ID, "steps")
        steps.clear()
        steps.send_keys("6")
        browser.find_element(By.ID, "diffuse").click()
        WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "status").text.startswith("done"))
        after = browser.execute_script(f"return {p}.piece.tokens")
        for name, column in after.items():
            old = np.asarray(before[name])
            new = np.asarray(column)
            assert np.array_equal(new[old > 90], old[old > 90])  # PAD kept
        assert after != before
        browser.save_screenshot(str(tmp_path / "meter.png"))
    finally:
        srv.stop()
