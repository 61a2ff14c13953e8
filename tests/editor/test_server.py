import asyncio
import dataclasses
import io
import socket
import threading
import time

import httpx
import numpy as np
import pretty_midi
import pytest

from schmubert.editor import server as editor_server
from schmubert.editor.server import start_background
from schmubert.sampling import SamplerOptions
from schmubert.tokens import STEPS_PER_BAR, canonicalize, midi_to_tokens

BAR = STEPS_PER_BAR
NAMES = ("melody", "bass", "drums")
OCTET = {"content-type": "application/octet-stream"}


@pytest.fixture(scope="module")
def running(trio_model):
    srv = start_background(trio_model, max_upload_bytes=256 * 1024, max_queued=4)
    yield srv
    srv.stop()


@pytest.fixture
def client(running):
    with httpx.Client(base_url=running.url, timeout=30) as c:
        yield c


def grid(tokens: dict) -> np.ndarray:
    return np.stack([np.asarray(tokens[n]) for n in NAMES], axis=1)


def load(client, path, **params):
    return client.post("/api/load", params={"name": path.name, **params}, content=path.read_bytes(),
                       headers=OCTET)


def run_job(client, body, timeout=30):
    r = client.post("/api/sample", json=body)
    assert r.status_code == 200, r.text
    job = r.json()["job"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/api/jobs/{job}").json()
        if state["state"] not in ("queued", "running"):
            return state
        time.sleep(0.02)
    raise AssertionError("the run did not finish")


def test_info_describes_the_model(client):
    info = client.get("/api/info").json()
    assert [t["name"] for t in info["tracks"]] == list(NAMES)
    assert info["bars"] == 64 and info["steps"] == 1024 and info["validation_set"] is True
    assert client.get("/").text.startswith("<!doctype html>")
    assert "PianoRoll" in client.get("/static/roll.js").text


def test_upload_mask_sample_export(client, trio_file):
    r = load(client, trio_file)
    assert r.status_code == 200 and r.json()["warnings"] == []
    tokens = r.json()["piece"]["tokens"]
    x = grid(tokens)
    assert np.array_equal(x, midi_to_tokens(trio_file, "trio", 1024))
    regions = [{"track": "bass", "start": 32 * BAR, "end": 48 * BAR}]
    masked = client.post("/api/mask", json={"tokens": tokens, "regions": regions}).json()
    assert masked["masked"] == 16 * BAR and (np.asarray(masked["piece"]["tokens"]["bass"][512:768]) == 90).all()
    state = run_job(client, {"tokens": tokens, "regions": regions, "steps": 16, "seed": 5})
    assert state["state"] == "done" and state["progress"] == 1 and state["seed"] == 5
    y = grid(state["piece"]["tokens"])
    outside = np.ones_like(x, dtype=bool)
    outside[32 * BAR:48 * BAR, 1] = False
    assert np.array_equal(y[outside], x[outside]) and (y[~outside] != 90).all()
    assert not np.array_equal(y[~outside], x[~outside])
    again = run_job(client, {"tokens": tokens, "regions": regions, "steps": 16, "seed": 5})
    assert again["piece"]["tokens"] == state["piece"]["tokens"]  # a seed reproduces a take

    r = client.post("/api/export/midi", json={"tokens": state["piece"]["tokens"], "programs": {"melody": 4},
                                               "qpm": 100})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/midi"
    pm = pretty_midi.PrettyMIDI(io.BytesIO(r.content))
    assert pm.instruments[0].program == 4 and pm.get_tempo_changes()[1][0] == pytest.approx(100)
    assert np.array_equal(midi_to_tokens(pm, "trio", 1024), canonicalize(y, "trio"))
    png = client.post("/api/export/png", json={"tokens": tokens, "regions": regions})
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


def test_every_bad_file_gets_a_message_and_the_server_stays_up(client, corpus):
    for path in sorted((corpus / "bad-input").glob("*")):
        r = load(client, path)
        body = r.json()
        assert r.status_code in (200, 400), (path.name, r.status_code)
        message = body["error"] if r.status_code == 400 else " ".join(body["warnings"])
        assert message.startswith(path.name + ":"), (path.name, body)
        assert client.get("/api/info").status_code == 200
    r = client.post("/api/load", params={"name": "noise.mid"}, content=np.random.default_rng(0).bytes(5000),
                    headers=OCTET)
    assert r.status_code == 400 and "noise.mid: not a readable MIDI file" in r.json()["error"]


def test_names_are_never_paths_and_uploads_are_limited(client, trio_file):
    r = client.post("/api/load", params={"name": "../../etc/passwd"}, content=b"MThd", headers=OCTET)
    assert r.status_code == 400 and r.json()["error"].startswith("passwd:")
    r = client.post("/api/load", params={"name": "big.mid"}, content=b"0" * (300 * 1024), headers=OCTET)
    assert r.status_code == 413 and "at most 0.2 MiB" in r.json()["error"]

    def chunks():
        yield trio_file.read_bytes()

    r = client.post("/api/load", content=chunks(), headers=OCTET)  # no Content-Length
    assert r.status_code == 411
    assert client.get("/api/info").status_code == 200


def test_bad_requests_are_4xx_with_a_reason(client, trio_file):
    tokens = load(client, trio_file).json()["piece"]["tokens"]
    cases = [
        ("/api/sample", {"tokens": tokens, "regions": []}, "select something first"),
        ("/api/sample", {"tokens": tokens, "regions": [{"track": "bass", "start": 0, "end": 16}], "steps": 0},
         "steps must be"),
        ("/api/sample", {"tokens": {"melody": [0]}, "regions": []}, "tokens.melody must be a list of 1024"),
        ("/api/sample", {"regions": []}, "bad request: tokens"),
        ("/api/edit", {"op": "transpose", "amount": 99, "tokens": tokens,
                       "regions": [{"track": "melody", "start": 0, "end": 1024}]}, "outside MIDI pitch"),
        ("/api/edit", {"op": "paste", "tokens": tokens, "regions": [{"track": "melody", "start": 0, "end": 16}]},
         "paste needs the source"),
        ("/api/export/midi", {"tokens": tokens, "programs": {"bass": 0}}, "not a bass program"),
    ]
    for path, body, reason in cases:
        r = client.post(path, json=body)
        assert r.status_code == 400 and reason in r.json()["error"], (path, r.text)
    r = client.post("/api/sample", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.get("/api/info", headers={"host": "attacker.example"}).status_code == 400


def test_edits_through_the_api(client, trio_file):
    tokens = load(client, trio_file).json()["piece"]["tokens"]
    x = grid(tokens)
    bar0 = [{"track": "melody", "start": 0, "end": 4 * BAR}]
    up = grid(client.post("/api/edit", json={"op": "transpose", "amount": 2, "tokens": tokens,
                                             "regions": bar0}).json()["piece"]["tokens"])
    on = x[:4 * BAR, 0] > 1
    assert np.array_equal(up[:4 * BAR, 0][on], x[:4 * BAR, 0][on] + 2) and np.array_equal(up[4 * BAR:], x[4 * BAR:])
    cleared = client.post("/api/edit", json={"op": "clear", "tokens": tokens, "regions": bar0}).json()["piece"]
    assert all(n[0] >= 4 * BAR for n in cleared["notes"]["melody"])
    empty = client.get("/api/empty").json()["piece"]["tokens"]
    pasted = client.post("/api/edit", json={"op": "paste", "amount": 0, "tokens": empty, "source": tokens,
                                            "regions": bar0}).json()["piece"]["notes"]
    assert pasted["melody"] and pasted["bass"] == [] and all(n[0] < 4 * BAR for n in pasted["melody"])


def test_cancel_and_validation_piece(client, trio_file, corpus_pieces):
    tokens = load(client, trio_file).json()["piece"]["tokens"]
    r = client.post("/api/sample", json={"tokens": tokens, "steps": 4096,
                                         "regions": [{"track": "melody", "start": 0, "end": 1024}]})
    job = r.json()["job"]
    assert client.post(f"/api/jobs/{job}/cancel", json={}).status_code == 200
    deadline = time.monotonic() + 10
    while client.get(f"/api/jobs/{job}").json()["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.get(f"/api/jobs/{job}").json()["state"] == "cancelled"
    piece = client.get("/api/validation", params={"seed": 0}).json()["piece"]
    assert any(np.array_equal(grid(piece["tokens"]), v) for v in corpus_pieces("trio", 2))


def test_cli_refuses_a_taken_port_and_warns_for_other_hosts(tmp_path, capsys, trio_model, monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        code = editor_server.main(["--checkpoint", str(trio_model.path), "--port", str(port), "--no-browser"])
        assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    finally:
        taken.close()
    served = []

    class Served:  # the HTTP server thread, recorded instead of started
        def __init__(self, app, sock):
            served.append(sock)

        def stop(self):
            served[-1].close()

    monkeypatch.setattr(editor_server, "Running", Served)
    monkeypatch.setattr("schmubert.editor.jobs.Sampler.serve", lambda self: None)
    monkeypatch.setattr("schmubert.checkpoints.WEIGHTS_DIR", tmp_path / "no-weights")
    assert editor_server.main(["--runs", str(tmp_path), "--no-browser"]) == 2  # no run, no shipped model
    assert "using the shipped model pretrained:trio" in capsys.readouterr().err
    assert served == []
    assert editor_server.main(["--checkpoint", str(trio_model.path), "--host", "0.0.0.0", "--port", "0",
                               "--no-browser"]) == 0
    captured = capsys.readouterr()
    assert "warning: listening on 0.0.0.0" in captured.err and served


def test_the_command_line_editor_runs_its_jobs_in_the_main_thread(trio_model, trio_file, monkeypatch):
    """``python -m schmubert.editor`` serves HTTP from a thread and samples in the thread that loaded the model
    (PyTorch's CPU ops run faster there); Ctrl+C (here: the last job's KeyboardInterrupt) stops both."""
    threads, urls = [], []

    def run(self, job):  # record the thread, then stop the editor as Ctrl+C would
        threads.append(threading.current_thread())
        raise KeyboardInterrupt

    class Started(editor_server.Running):
        def __init__(self, app, sock):
            super().__init__(app, sock)
            urls.append(self.url)
            threading.Thread(target=request, daemon=True).start()

    def request():
        with httpx.Client(base_url=urls[0], timeout=30) as c:
            tokens = load(c, trio_file).json()["piece"]["tokens"]
            c.post("/api/sample", json={"tokens": tokens, "regions": [{"track": "bass", "start": 0, "end": 64}]})

    monkeypatch.setattr(editor_server, "Running", Started)
    monkeypatch.setattr("schmubert.editor.jobs.Sampler.run", run)
    monkeypatch.setattr("schmubert.editor.server.load_model", lambda *a, **k: trio_model)
    assert editor_server.main(["--checkpoint", "any", "--port", "0", "--no-browser"]) == 0
    assert threads == [threading.main_thread()]
    with pytest.raises(httpx.TransportError):  # the HTTP server stopped with it
        httpx.get(urls[0] + "/api/info", timeout=2)


def test_connections_send_without_waiting_for_acks():
    """Each accepted connection has TCP_NODELAY (responses are written as headers, then body; without it each
    waited for the client's delayed ACK, about 40 ms a request)."""
    seen = []

    async def serve():
        server = await asyncio.get_running_loop().create_server(Recorder, sock=editor_server.bind("127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    class Recorder(asyncio.Protocol):
        def connection_made(self, transport):
            seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    asyncio.run(serve())
    assert seen and seen[0] != 0


def test_a_long_poll_answers_when_the_run_ends(client, trio_file):
    tokens = load(client, trio_file).json()["piece"]["tokens"]
    job = client.post("/api/sample", json={"tokens": tokens, "steps": 4, "regions": [
        {"track": "bass", "start": 0, "end": 4 * BAR}]}).json()["job"]
    state = client.get(f"/api/jobs/{job}", params={"wait": 10}).json()
    assert state["state"] == "done" and "piece" in state  # one request, however long the run took
    slow = client.post("/api/sample", json={"tokens": tokens, "steps": 4096, "regions": [
        {"track": "melody", "start": 0, "end": 1024}]}).json()["job"]
    began = time.monotonic()
    state = client.get(f"/api/jobs/{slow}", params={"wait": 0.2}).json()
    assert state["state"] in ("queued", "running") and time.monotonic() - began < 5  # the wait is bounded
    client.post(f"/api/jobs/{slow}/cancel", json={})
    assert client.get(f"/api/jobs/{slow}", params={"wait": 10}).json()["state"] == "cancelled"
    assert client.get(f"/api/jobs/{slow}", params={"wait": 11}).status_code == 400  # at most MAX_WAIT


def test_a_melody_model_gets_one_lane(melody_model, corpus):
    srv = start_background(melody_model)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            info = client.get("/api/info").json()
            assert [t["name"] for t in info["tracks"]] == ["melody"] and info["validation_set"] is False
            path = sorted((corpus / "lakh-melody-64bar").glob("*.mid"))[0]
            piece = load(client, path).json()["piece"]
            assert list(piece["tokens"]) == ["melody"]
            assert np.array_equal(piece["tokens"]["melody"], midi_to_tokens(path, "melody", 1024)[:, 0])
            r = client.get("/api/validation")
            assert r.status_code == 400 and "validation set is not on this machine" in r.json()["error"]
            r = client.post("/api/export/midi", json={"tokens": piece["tokens"], "programs": {"bass": 33}})
            assert r.status_code == 400 and "no melodic track 'bass'" in r.json()["error"]
    finally:
        srv.stop()


def test_song_upload_past_bar_64_exports_the_whole_song(client, corpus):
    """The API returns the song (for DAW bridges): instruments, the tracks chosen, the grey background; an edit
    in bars 70-74 of the song comes back spliced into the whole file."""
    path = corpus / "multitrack-songs" / "Mr. Blue Sky.mid"  # 175 bpm, 9 instruments, the lead on a flute
    r = load(client, path, start_bar=40, melody_track="Melody")
    assert r.status_code == 200, r.text
    out = r.json()
    song = out["song"]
    assert song["window"] == [40, 104] and song["assignment"]["melody"] == 0 and "'Melody' (GM 73" in song["tracks"]
    assert {i["name"] for i in song["instruments"]} >= {"Melody", "Piano", "Bass", "Drums", "Strings"}
    assert song["background"] and all(len(n) == 3 for n in song["background"])
    state = run_job(client, {"tokens": out["piece"]["tokens"], "steps": 4, "seed": 1,
                             "regions": [{"track": "melody", "start": 30 * BAR, "end": 34 * BAR}]})
    r = client.post("/api/export/song", json={"song": song["id"], "tokens": state["piece"]["tokens"]})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/midi"
    before, after = pretty_midi.PrettyMIDI(str(path)), pretty_midi.PrettyMIDI(io.BytesIO(r.content))
    assert after.get_tempo_changes()[1].tolist() == before.get_tempo_changes()[1].tolist()
    assert len(after.instruments) == len(before.instruments) and after.get_end_time() == before.get_end_time()
    t0, t1 = (before.tick_to_time(bar * 4 * before.resolution) for bar in (70, 74))
    key = lambda n: (n.pitch, round(n.start, 6), round(n.end, 6), n.velocity)  # noqa: E731
    for a, b in zip(before.instruments, after.instruments, strict=True):
        if a.name == "Melody":
            assert {key(n) for n in a.notes if n.end <= t0 or n.start >= t1} <= {key(n) for n in b.notes}
            assert {key(n) for n in b.notes if t0 <= n.start < t1} != {key(n) for n in a.notes if t0 <= n.start < t1}
        else:
            assert sorted(map(key, a.notes)) == sorted(map(key, b.notes)), a.name
    # unchanged lanes give the song back note for note
    same = client.post("/api/export/song", json={"song": song["id"], "tokens": out["piece"]["tokens"]})
    again = pretty_midi.PrettyMIDI(io.BytesIO(same.content))
    assert [sorted(map(key, i.notes)) for i in again.instruments] == [sorted(map(key, i.notes))
                                                                      for i in before.instruments]


def test_song_choices_and_files_that_cannot_be_spliced(client, corpus):
    r = load(client, corpus / "multitrack-songs" / "Mr. Blue Sky.mid", drum_track="Piano")
    assert r.status_code == 400 and "drum-channel instrument" in r.json()["error"]
    waltz = load(client, corpus / "bad-input" / "waltz-3-4.mid").json()
    assert waltz["song"] is None and any("3/4 time" in w and "model's tracks only" in w for w in waltz["warnings"])
    r = client.post("/api/export/song", json={"song": "nope", "tokens": waltz["piece"]["tokens"]})
    assert r.status_code == 400 and "open the file again" in r.json()["error"]


def test_a_pop909_song_loads_as_a_song_and_a_take_that_changes_nothing_warns(client, running, corpus,
                                                                            monkeypatch):
    r = load(client, corpus / "pop909" / "022.mid")  # a 1/4 signature: read in 4/4 from its notes
    assert r.status_code == 200, r.text
    out = r.json()
    song = out["song"]
    assert song is not None and song["choices"]["melody"]["index"] == 0 and song["assignment"]["bass"] is None
    assert any("1/4 makes bars of one beat" in w for w in out["warnings"])
    assert not any("bar lines do not match" in w for w in out["warnings"])  # its bars are read, not the file's
    sampler = running.server.config.app.state.sampler
    monkeypatch.setattr(sampler, "run", lambda job: job.x.copy())  # the take is the input
    state = run_job(client, {"tokens": out["piece"]["tokens"], "steps": 4, "seed": 1, "song": song["id"],
                             "regions": [{"track": "melody", "start": 8 * BAR, "end": 12 * BAR}]})
    assert state["state"] == "done" and state["warning"].endswith("Regenerate draws another take")
    assert "came back unchanged: the model drew the same notes again" in state["warning"]
    r = load(client, corpus / "pop909" / "034.mid", time_signature="4/4")  # notes in 3, read in 4/4 as asked
    assert r.status_code == 200 and r.json()["song"] is not None
    assert load(client, corpus / "pop909" / "034.mid", time_signature="3/4").status_code == 400


def test_conditions_through_the_api(conditional_model, trio_file):
    srv = start_background(conditional_model)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            info = client.get("/api/info").json()
            assert info["attributes"] is True and "D:minor" in info["keys"] and len(info["keys"]) == 24
            assert info["defaults"]["cfg_scale"] == 2.0  # the sampler's, as the model ships none
            assert info["defaults"]["repair_steps"] == SamplerOptions().repair_step_count()  # the model ships none
            piece = load(client, trio_file).json()["piece"]
            regions = [{"track": "melody", "start": 0, "end": 4 * BAR}]
            body = {"tokens": piece["tokens"], "regions": regions, "steps": 4, "seed": 1, "key": "D:minor",
                    "cfg_scale": 1.0, "density": {"melody": 6}, "mean_pitch": {"melody": 72}, "repair": 1,
                    "repair_steps": 2}
            assert run_job(client, body)["state"] == "done"
            bad = client.post("/api/sample", json={**body, "key": "H:major"})
            assert bad.status_code == 400 and "unknown key" in bad.json()["error"]
            bad = client.post("/api/sample", json={**body, "repair": -1})
            assert bad.status_code == 400 and "repair must be between" in bad.json()["error"]
            assert client.post("/api/sample", json={**body, "repair_steps": 0}).status_code in (400, 422)
    finally:
        srv.stop()


def test_the_editor_offers_the_model_s_own_guidance_scale(conditional_model, trio_file):
    model = dataclasses.replace(conditional_model, hparams={**conditional_model.hparams,
                                                            "sampler": {"cfg_scale": 1.5}})
    srv = start_background(model)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            assert client.get("/api/info").json()["defaults"]["cfg_scale"] == 1.5
            piece = load(client, trio_file).json()["piece"]
            body = {"tokens": piece["tokens"], "regions": [{"track": "melody", "start": 0, "end": BAR}], "steps": 4,
                    "seed": 1, "key": "D:minor"}  # no cfg_scale: the model's
            assert run_job(client, body)["state"] == "done"
    finally:
        srv.stop()


def test_a_model_without_attributes_says_so(client, trio_file):
    assert client.get("/api/info").json()["attributes"] is False
    piece = load(client, trio_file).json()["piece"]
    r = client.post("/api/sample", json={"tokens": piece["tokens"], "key": "D:minor",
                                         "regions": [{"track": "bass", "start": 0, "end": BAR}]})
    assert r.status_code == 400 and "trained without attributes" in r.json()["error"]
