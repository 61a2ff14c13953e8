import dataclasses
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from schmubert import sample
from schmubert.editor.jobs import Busy, Options, Sampler
from schmubert.editor.pieces import Region, known_mask
from schmubert.tokens import STEPS_PER_BAR, midi_to_tokens

BAR = STEPS_PER_BAR


class Slow(nn.Module):
    """The denoiser, slowed down and counting how many calls run at once."""

    def __init__(self, inner: nn.Module, seconds: float):
        super().__init__()
        self.inner, self.seconds = inner, seconds
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def forward(self, x_t):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return self.inner(x_t)


def wait(job, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not job.finished and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.finished, f"job still {job.state} after {timeout} s"
    return job


@pytest.fixture
def piece(trio_file):
    return midi_to_tokens(trio_file, "trio", 1024)


def bass_known():
    return known_mask((1, 1024, 3), [Region(1, 32 * BAR, 48 * BAR)])[0].numpy()


def test_a_run_is_the_sample_cli_path(trio_model, piece):
    sampler = Sampler(trio_model)
    try:
        known = bass_known()
        job = wait(sampler.submit(piece, known, Options(steps=16, seed=3)))
        assert job.state == "done" and job.progress == 1.0 and job.seconds > 0
        y = job.result
        assert np.array_equal(y[known], piece[known])
        assert (y[:, :2] < 90).all() and (y[:, 2] < 512).all()
        cfg = Options(steps=16, seed=3).config(3)
        expected = sample.generate(cfg, trio_model, sample.Scenario(piece, known, "x", []), None,
                                   torch.Generator().manual_seed(3))[0]
        assert np.array_equal(y, expected)
        again = wait(sampler.submit(piece, known, Options(steps=16)))
        assert again.seed != job.seed  # a fresh take unless a seed is asked for
    finally:
        sampler.close()


def test_note_density_guides_the_generated_tracks(trio_model, piece):
    sampler = Sampler(trio_model)
    try:
        known = bass_known()
        job = wait(sampler.submit(piece, known, Options(steps=8, note_density=4.0, seed=1)))
        assert job.state == "done", job.error
        assert np.array_equal(job.result[known], piece[known])
        with pytest.raises(ValueError, match="density tracks"):
            sampler.submit(piece, known, Options(note_density=4.0, density_tracks=["piano"]))
        with pytest.raises(ValueError, match="steps"):
            sampler.submit(piece, known, Options(steps=0))
    finally:
        sampler.close()


def test_runs_queue_one_at_a_time_and_can_be_cancelled(trio_model, piece):
    slow = Slow(trio_model.denoiser, 0.02)
    sampler = Sampler(dataclasses.replace(trio_model, denoiser=slow), max_queued=2)
    try:
        known = bass_known()
        first = sampler.submit(piece, known, Options(steps=2000, seed=0))  # ~40 s if not cancelled
        deadline = time.monotonic() + 10
        while first.progress == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        second = sampler.submit(piece, known, Options(steps=4, seed=0))
        third = sampler.submit(piece, known, Options(steps=4, seed=0))
        with pytest.raises(Busy):
            sampler.submit(piece, known, Options(steps=4))
        assert first.state == "running" and 0 < first.progress < 1
        assert second.state == "queued" and sampler.position(second) == 1 and sampler.position(third) == 2
        sampler.cancel(third.id)
        assert third.state == "cancelled"
        began = time.monotonic()
        sampler.cancel(first.id)
        wait(first)
        assert first.state == "cancelled" and first.result is None and time.monotonic() - began < 2
        assert wait(second).state == "done"
        time.sleep(0.1)
        assert third.state == "cancelled" and third.result is None
        assert slow.most == 1
    finally:
        sampler.close()


def test_a_failing_run_reports_and_the_worker_goes_on(trio_model, piece):
    class Broken(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x_t):
            raise RuntimeError("boom")

    sampler = Sampler(dataclasses.replace(trio_model, denoiser=Broken(trio_model.denoiser)))
    try:
        job = wait(sampler.submit(piece, bass_known(), Options(steps=4)))
        assert job.state == "failed" and "boom" in job.error
        assert sampler.thread.is_alive()
    finally:
        sampler.close()


def test_key_density_and_register_are_told_over_the_selection(conditional_model, piece):
    from schmubert import attributes as A
    from schmubert.editor.jobs import editor_attributes

    known = bass_known()  # bass, bars 32..47
    opts = Options(key="D:minor", density={"bass": 3, "melody": 8}, register={"bass": 40})
    told = editor_attributes(opts, conditional_model, piece, known)
    assert told.shape == (1, 64, 3) and A.key_name(int(told.key[0])) == "D:minor"
    bass, melody = told.onsets[0, :, 1], told.onsets[0, :, 0]
    assert (bass[32:48] == 3).all() and (bass[:32] == A.ONSETS_NULL).all() and (bass[48:] == A.ONSETS_NULL).all()
    assert (melody[32:48] == 8).all() and (melody[:32] == A.ONSETS_NULL).all()  # an unselected track: the bars
    assert (told.register[0, 32:48, 1] == A.register_bin(torch.tensor(40.0))).all()
    own = editor_attributes(Options(), conditional_model, piece, known).key
    assert own.tolist() == A.estimate_key(torch.as_tensor(piece)[None], conditional_model.tracks).tolist()
    assert editor_attributes(Options(key="any"), conditional_model, piece, known).is_null()
    sampler = Sampler(conditional_model)
    try:
        job = wait(sampler.submit(piece, known, dataclasses.replace(opts, steps=8, cfg_scale=2.0, seed=1,
                                                                    repair=2)))
        assert job.state == "done", job.error
        assert np.array_equal(job.result[known], piece[known]) and job.progress == 1.0
        for bad, message in (({"key": "H"}, "unknown key"), ({"register": {"drums": 40}}, "drums have no register"),
                             ({"density": {"piano": 2}}, "no track 'piano'"),
                             ({"repair": 99}, "repair must be between 0 and 8")):
            with pytest.raises(ValueError, match=message):
                sampler.submit(piece, known, Options(**bad))
    finally:
        sampler.close()


def test_a_model_without_attributes_refuses_them(trio_model, piece):
    sampler = Sampler(trio_model)
    try:
        with pytest.raises(ValueError, match="trained without attributes"):
            sampler.submit(piece, bass_known(), Options(key="D:minor"))
        assert Options().key == "piece"  # the default asks nothing of such a model
        with pytest.raises(ValueError, match="needs a model with a copy prior"):
            sampler.submit(piece, bass_known(), Options(network_every=4))
        assert Options().network_every == 1 and Options().sampler().network_every == 1
        assert Options(network_every=4).sampler().network_every == 4  # what a run's sampler is given
    finally:
        sampler.close()


def test_only_an_asked_key_reaches_the_sample_config():
    assert Options(key="D:minor").config(1).key == "D:minor"
    assert Options(key="piece").config(1).key == Options(key="any").config(1).key == "auto"


def test_the_sampler_before_issue_44_is_one_choice_away():
    old = Options(steps=32, schedule="linear", cfg_interval=1.0, repair_steps=32)
    sampler = old.sampler()
    assert (sampler.schedule, sampler.cfg_interval, sampler.repair_steps) == ("linear", 1.0, 32)
    assert old.config(1).steps == 32
    assert Options().sampler().repair_steps is None  # the model's own default (trio 4), else 8


def test_a_take_that_changes_nothing_says_why_and_what_to_do(trio_model, crowded_song, monkeypatch):
    """The first instrument of each range, chosen in the pickers, is silent in bars 16-20; a take that draws
    nothing there says so and names the instruments that play there; one that draws notes says nothing."""
    from schmubert.editor.pieces import read_song_view

    view = read_song_view(crowded_song.read_bytes(), crowded_song.name, trio_model, 0,
                          {"melody": "2", "bass": "0", "drums": "1"})
    known = known_mask((1, 1024, 3), [Region(k, 16 * BAR, 20 * BAR) for k in range(3)])[0].numpy()
    sampler = Sampler(trio_model)
    try:
        monkeypatch.setattr(sampler, "run", lambda job: job.x.copy())  # a take that draws nothing
        job = wait(sampler.submit(view.original, known, Options(steps=4, seed=1), view))
        assert job.state == "done" and job.warning.startswith(
            "bars 16:20 came back unchanged: the melody, bass and drums are silent there in crowded.mid")
        assert "#5 'Lead' in the melody picker (14 notes there)" in job.warning
        without = wait(sampler.submit(view.original, known, Options(steps=4, seed=1)))
        assert "no other instrument plays there" in without.warning
        monkeypatch.undo()
        drawn = wait(sampler.submit(view.original, known, Options(steps=4, seed=1), view))
        assert drawn.state == "done" and drawn.warning is None
    finally:
        sampler.close()
