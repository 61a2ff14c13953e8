"""The editor with a voice-set model (issue 42 item 5, issue 43): a tiny random pop909 model (melody, bridge of 4
voices, piano of 6) with velocity. A POP909 song is read as ``python -m schmubert.sample --input`` reads it for the
model, a selection of bars x the piano masks all its voices, the take's velocities are the model's, and the
download is the whole song spliced by the sample CLI's own splice: everything outside the selection identical
tick for tick. A model built with meter shows a song in 3 in its slots (PAD after each short bar)."""

from __future__ import annotations

import dataclasses
import time

import httpx
import numpy as np
import pytest
import symusic
import torch
from torch import nn

from schmubert import attributes as A
from schmubert import decoding, sample, song
from schmubert.editor import pieces
from schmubert.editor.jobs import Options, Sampler, editor_attributes
from schmubert.editor.server import start_background
from schmubert.tokens import (
    STEPS_PER_BAR,
    VELOCITY_BINS,
    bin_to_velocity,
    instruments,
    is_onset,
    pad_mask,
)

BAR = STEPS_PER_BAR
OCTET = {"content-type": "application/octet-stream"}
BIN_VELOCITIES = set(bin_to_velocity(np.arange(1, VELOCITY_BINS + 1)).tolist())


def columns(model, name: str) -> list[int]:
    return dict(instruments(model.tracks))[name]


def grid(obj: dict, model) -> np.ndarray:
    return np.stack([np.asarray(obj[t.name]) for t in model.tracks], axis=1)


def load(client, path, **params):
    return client.post("/api/load", params={"name": path.name, **params}, content=path.read_bytes(),
                       headers=OCTET)


def run_job(client, body, timeout=60):
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


def notes_of(score: symusic.Score) -> list[list[tuple]]:
    """Each track's notes, tick-exact: (start, duration, pitch, velocity), sorted."""
    return [sorted((n.time, n.duration, n.pitch, n.velocity) for n in t.notes) for t in score.tracks]


def cli_edit(model, path, infill: str, generate: str = "piano", **options) -> sample.Scenario:
    """The sample CLI's scenario of ``--input path --infill ... --generate-tracks piano --start-bar 0``."""
    cfg = sample.SampleConfig(input=path, infill=[infill], generate_tracks=[generate], start_bar=0, **options)
    return sample.song_scenario(cfg, model, "infill")


def check_the_song_around(before: symusic.Score, after: symusic.Score, piano: int, t0: int, t1: int) -> list[tuple]:
    """Everything of ``after`` but the piano's notes starting in ticks ``t0 .. t1`` is ``before``'s, tick for tick
    (a piano note sounding into the span ends at its start); returns the piano's new notes there."""
    assert after.ticks_per_quarter == before.ticks_per_quarter
    assert [(t.time, t.qpm) for t in after.tempos] == [(t.time, t.qpm) for t in before.tempos]
    assert [(t.time, t.numerator, t.denominator) for t in after.time_signatures] == [
        (t.time, t.numerator, t.denominator) for t in before.time_signatures]
    assert [(t.name, t.program, t.is_drum) for t in after.tracks] == [(t.name, t.program, t.is_drum)
                                                                     for t in before.tracks]
    a, b = notes_of(before), notes_of(after)
    for i in range(len(a)):
        if i != piano:
            assert a[i] == b[i], before.tracks[i].name
    expected = sorted((s, min(d, t0 - s) if s < t0 < s + d else d, p, v) for s, d, p, v in a[piano]
                      if s < t0 or s >= t1)
    assert sorted(n for n in b[piano] if n[0] < t0 or n[0] >= t1) == expected
    return [n for n in b[piano] if t0 <= n[0] < t1]


@pytest.fixture(scope="module")
def running(pop909_model):
    srv = start_background(pop909_model)
    yield srv
    srv.stop()


@pytest.fixture
def client(running):
    with httpx.Client(base_url=running.url, timeout=60) as c:
        yield c


def test_info_lists_the_instruments_and_velocity(client):
    info = client.get("/api/info").json()
    assert [(i["name"], i["voices"]) for i in info["instruments"]] == [("melody", 1), ("bridge", 4), ("piano", 6)]
    assert info["instruments"][2]["columns"] == [f"piano.{v}" for v in range(6)]
    assert info["velocity"] is True and info["meter"] is False and info["attributes"] is True
    assert len(info["tracks"]) == 11 and info["tracks"][5]["instrument"] == "piano"
    empty = client.get("/api/empty").json()["piece"]
    assert list(empty["notes"]) == ["melody", "bridge", "piano"] and set(empty["velocity"]) == set(empty["tokens"])


def test_a_pop909_song_edited_in_bars_8_to_16_of_the_piano(client, pop909_model, pop909_song):
    """Upload, select bars 8-16 x the piano (all six voices), diffuse, download: the lanes are what the sample CLI
    reads, the take's new piano notes have the model's velocities, the download is the CLI's splice of that take,
    and everything else of the song is as it was, tick for tick."""
    model = pop909_model
    r = load(client, pop909_song)
    assert r.status_code == 200, r.text
    out = r.json()
    view = out["song"]
    assert view["assignment"] == {"melody": 0, "bridge": 1, "piano": 2} and view["window"] == [0, 64]
    assert "piano = #2 'PIANO'" in view["choices"]["piano"]["text"]
    x, velocity = grid(out["piece"]["tokens"], model), grid(out["piece"]["velocity"], model)
    cli = cli_edit(model, pop909_song, "8:16")
    assert cli.song.window == (0, 64)
    assert np.array_equal(x, cli.x) and np.array_equal(velocity, cli.velocity)  # read as the CLI reads it
    piano = out["piece"]["notes"]["piano"]
    assert len({n[3] for n in piano}) >= 4  # the song's own velocities, one per note
    onsets = [n[0] for n in piano]
    assert len(onsets) > 1.3 * len(set(onsets))  # chords: the voices of one instrument in one lane

    body = {"tokens": out["piece"]["tokens"], "velocity": out["piece"]["velocity"], "song": view["id"],
            "regions": [{"track": "piano", "start": 8 * BAR, "end": 16 * BAR}], "steps": 8, "seed": 3,
            "cfg_scale": 0}
    state = run_job(client, body)
    assert state["state"] == "done", state["error"]
    y, drawn = grid(state["piece"]["tokens"], model), grid(state["piece"]["velocity"], model)
    inside = np.zeros_like(x, dtype=bool)
    inside[8 * BAR:16 * BAR, columns(model, "piano")] = True
    assert np.array_equal(y[~inside], x[~inside]) and np.array_equal(drawn[~inside], velocity[~inside])
    assert (y[inside] < 90).all()
    for k in columns(model, "piano"):  # each new onset has a drawn bin, nothing else has one
        cells = slice(8 * BAR, 16 * BAR)
        on = is_onset(y[cells, k], model.tracks[k])
        assert (drawn[cells, k][on] >= 1).all() and (drawn[cells, k][~on] == 0).all()
    new_bins = drawn[inside][drawn[inside] > 0]
    assert len(new_bins) > 20 and len(set(new_bins.tolist())) >= 3

    # the take is the sample CLI's for the same seed and options
    known = ~inside
    options = Options(steps=8, seed=3, cfg_scale=0)
    told = editor_attributes(options, model, x, known, None, torch.Generator().manual_seed(3))
    plan = decoding.resolve(options.request(x, known, model.tracks), model)
    tokens, bins = sample.generate_takes(options.config(3), model, sample.Scenario(x, known, "x", [],
                                                                                   velocity=velocity),
                                         None, torch.Generator().manual_seed(3), attributes=told, plan=plan)
    assert np.array_equal(tokens[0], y) and np.array_equal(bins[0], drawn)

    # the download: the whole song, by the CLI's splice of the take
    r = client.post("/api/export/song", json={"song": view["id"], "tokens": state["piece"]["tokens"],
                                               "velocity": state["piece"]["velocity"]})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/midi"
    assert r.content == song.song_bytes(cli.song.splice(y, model.tracks, drawn))
    before, after = symusic.Score(str(pop909_song)), symusic.Score.from_midi(r.content)
    s = cli.song.song
    t0, t1 = song.bar_tick(s, cli.song.run, 8), song.bar_tick(s, cli.song.run, 16)
    new = check_the_song_around(before, after, 2, t0, t1)
    assert new and {n[3] for n in new} <= BIN_VELOCITIES and len({n[3] for n in new}) >= 3
    run = cli.song.run
    drawn_at: dict[tuple[int, int], set[int]] = {}  # (tick, pitch) -> the velocities of the bins drawn there
    for k in columns(model, "piano"):
        for step in np.flatnonzero(is_onset(y[8 * BAR:16 * BAR, k], model.tracks[k])) + 8 * BAR:
            tick = int(song.real_to_tick(s, run, np.array([step]))[0])
            drawn_at.setdefault((tick, int(y[step, k]) + 19), set()).add(int(bin_to_velocity(drawn[step, k])))
    assert {(n[0], n[2]) for n in new} == set(drawn_at)  # each new note where it was drawn, with its bin
    assert all(n[3] in drawn_at[n[0], n[2]] for n in new)
    # unchanged lanes give the song back note for note
    same = client.post("/api/export/song", json={"song": view["id"], "tokens": out["piece"]["tokens"],
                                                  "velocity": out["piece"]["velocity"]})
    assert notes_of(symusic.Score.from_midi(same.content)) == notes_of(before)


def test_roles_are_chosen_as_the_cli_chooses_them(client, pop909_song, corpus):
    r = load(client, pop909_song, track=["piano=1", "bridge=PIANO"])
    assert r.status_code == 200, r.text
    view = r.json()["song"]
    assert view["assignment"] == {"melody": 0, "bridge": 2, "piano": 1}
    assert view["choices"]["piano"]["asked"] is True
    bad = load(client, pop909_song, track=["drums=1"])
    assert bad.status_code == 400 and "has no role 'drums'" in bad.json()["error"]
    bad = load(client, pop909_song, track=["piano=1", "piano=2"])
    assert bad.status_code == 400 and "two instruments asked for the piano" in bad.json()["error"]
    bad = load(client, pop909_song, time_signature="3/4")
    assert bad.status_code == 400 and "reads 4/4 only" in bad.json()["error"]
    waltz = load(client, corpus / "bad-input" / "waltz-3-4.mid").json()  # no song: the lanes still load
    assert waltz["song"] is None and set(waltz["piece"]["velocity"]) == set(waltz["piece"]["tokens"])


def test_edits_carry_the_velocities_with_their_notes(client, pop909_model, pop909_song):
    model = pop909_model
    piece = load(client, pop909_song).json()["piece"]
    x, velocity = grid(piece["tokens"], model), grid(piece["velocity"], model)
    bars = [{"track": "piano", "start": 8 * BAR, "end": 10 * BAR}]
    up = client.post("/api/edit", json={"op": "transpose", "amount": 1, "tokens": piece["tokens"],
                                         "velocity": piece["velocity"], "regions": bars}).json()["piece"]
    assert np.array_equal(grid(up["velocity"], model), velocity)
    moved = client.post("/api/edit", json={"op": "shift", "amount": 2 * BAR, "tokens": piece["tokens"],
                                            "velocity": piece["velocity"], "regions": bars}).json()["piece"]
    y, v = grid(moved["tokens"], model), grid(moved["velocity"], model)
    piano = columns(model, "piano")
    assert np.array_equal(v[10 * BAR:12 * BAR, piano][y[10 * BAR:12 * BAR, piano] > 1],
                          velocity[8 * BAR:10 * BAR, piano][x[8 * BAR:10 * BAR, piano] > 1])
    assert not v[8 * BAR:10 * BAR, piano].any()  # the bars left behind are silent


class Spy(nn.Module):
    """The denoiser, keeping the attributes and velocity bins it was called with."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.predicts_velocity, self.tracks, self.conditional = inner.predicts_velocity, inner.tracks, True
        self.calls: list[tuple] = []

    def forward(self, x_t, attrs=None, velocity=None):
        self.calls.append((attrs, velocity))
        return self.inner(x_t, attrs, velocity)


def test_dynamics_reach_the_sampler_as_an_attribute(pop909_model, pop909_song):
    model = pop909_model
    view = pieces.read_song_view(pop909_song.read_bytes(), pop909_song.name, model, 0, {})
    regions = pieces.regions_from_json([{"track": "piano", "start": 8 * BAR, "end": 12 * BAR}], model.tracks,
                                       model.steps)
    known = pieces.known_mask((1, model.steps, len(model.tracks)), regions)[0].numpy()
    options = Options(steps=4, seed=1, cfg_scale=0, dynamics={"piano": "pp"})
    told = editor_attributes(options, model, view.original, known)
    piano = [name for name, _ in instruments(model.tracks)].index("piano")
    pp = A.parse_dynamics("pp")
    assert (told.dynamics[0, 8:12, piano] == pp).all()
    assert (told.dynamics[0, :8, piano] == A.DYNAMICS_NULL).all() and (told.dynamics[0, 12:, piano] ==
                                                                       A.DYNAMICS_NULL).all()
    spy = Spy(model.denoiser)
    sampler = Sampler(dataclasses.replace(model, denoiser=spy))
    try:
        job = sampler.submit(view.original, known, options, view, view.velocity)
        deadline = time.monotonic() + 60
        while not job.finished and time.monotonic() < deadline:
            time.sleep(0.01)
        assert job.state == "done", job.error
        attrs, velocity = spy.calls[0]
        assert (attrs.dynamics[0, 8:12, piano] == pp).all()  # told to the network, bar by bar
        shown = velocity[0].cpu().numpy()
        assert np.array_equal(shown[known], view.velocity[known])  # the song's bins, where known
        with pytest.raises(ValueError, match="no track 'organ'"):
            sampler.submit(view.original, known, Options(dynamics={"organ": "pp"}))
    finally:
        sampler.close()


def test_a_meter_model_shows_a_song_in_3_in_its_slots(pop909_meter_model, corpus):
    """POP909's 034.mid moves in 3 under a 1/4 signature: a meter model reads it in 3/4 (a pickup bar 0 of 6
    sixteenths), each bar in its slot with PAD after its end; an edit of bars 4-8 of the piano keeps PAD, and the
    download is the CLI's splice, the rest of the song tick for tick."""
    model = pop909_meter_model
    path = corpus / "pop909" / "034.mid"
    srv = start_background(model)
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            assert client.get("/api/info").json()["meter"] is True
            out = load(client, path).json()
            view = out["song"]
            layout = out["piece"]["layout"]
            assert layout["lengths"][:3] == [6, 12, 12] and set(layout["lengths"]) == {6, 12}
            assert not any(layout["continues"])
            x, velocity = grid(out["piece"]["tokens"], model), grid(out["piece"]["velocity"], model)
            pad = pad_mask(x, model.tracks)
            assert pad[:16].sum(axis=0).tolist() == [10] * 11 and pad[16:32].sum(axis=0).tolist() == [4] * 11
            cli = cli_edit(model, path, "4:8")
            assert cli.song.window == tuple(view["window"]) == (0, 64)
            assert np.array_equal(x, cli.x) and np.array_equal(velocity, cli.velocity)
            assert any("3/4" in w for w in out["warnings"])
            masked = client.post("/api/mask", json={"tokens": out["piece"]["tokens"],
                                                    "regions": [{"track": "piano", "start": 64, "end": 128}]})
            assert masked.json()["masked"] == 4 * 12 * 6  # PAD is never masked
            body = {"tokens": out["piece"]["tokens"], "velocity": out["piece"]["velocity"], "song": view["id"],
                    "regions": [{"track": "piano", "start": 4 * BAR, "end": 8 * BAR}], "steps": 6, "seed": 2}
            state = run_job(client, body)
            assert state["state"] == "done", state["error"]
            y, drawn = grid(state["piece"]["tokens"], model), grid(state["piece"]["velocity"], model)
            assert np.array_equal(y[pad], x[pad]) and state["piece"]["layout"] == layout
            inside = np.zeros_like(x, dtype=bool)
            inside[4 * BAR:8 * BAR, columns(model, "piano")] = True
            assert np.array_equal(y[~inside], x[~inside]) and not np.array_equal(y[inside], x[inside])
            r = client.post("/api/export/song", json={"song": view["id"], "tokens": state["piece"]["tokens"],
                                                       "velocity": state["piece"]["velocity"]})
            assert r.content == song.song_bytes(cli.song.splice(y, model.tracks, drawn))
            s, run = cli.song.song, cli.song.run
            new = check_the_song_around(symusic.Score(str(path)), symusic.Score.from_midi(r.content), 2,
                                        song.bar_tick(s, run, 4), song.bar_tick(s, run, 8))
            assert new and {n[3] for n in new} <= BIN_VELOCITIES
            bar_ticks = [song.bar_tick(s, run, b) for b in range(4, 9)]
            assert all(any(a <= n[0] < b for a, b in zip(bar_ticks[:-1], bar_ticks[1:], strict=True)) for n in new)
            assert all((n[0] - bar_ticks[0]) % (s.resolution // 4) == 0 for n in new)  # on a 16th of its bar
    finally:
        srv.stop()
