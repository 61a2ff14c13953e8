import itertools
import json

import numpy as np
import pytest
import torch

from schmubert.data import (
    DataConfig,
    DatasetError,
    ResumableSampler,
    TokenDataModule,
    check_meta,
    load_meta,
    roll_bars,
    transpose,
)
from schmubert.tokens import MAX_PITCH, MIN_PITCH, PITCH_OFFSET, get_tracks

TRIO = get_tracks("trio")


def test_transpose_keeps_range_shifts_melody_and_bass_together_and_leaves_drums(trio_dataset):
    x0 = torch.from_numpy(np.load(trio_dataset / "train.npy").astype(np.int64))
    gen = torch.Generator().manual_seed(0)
    shifted_any = False
    for _ in range(5):
        out = transpose(x0, TRIO, max_shift=12, generator=gen)
        assert torch.equal(out[..., 2], x0[..., 2])  # drums untouched
        on = x0[..., :2] >= 2
        assert torch.equal(out[..., :2][~on], x0[..., :2][~on])  # no-event / note-off untouched
        pitches = out[..., :2][on] + PITCH_OFFSET
        assert pitches.min() >= MIN_PITCH and pitches.max() <= MAX_PITCH
        for b in range(len(x0)):
            d = (out[b, ..., :2] - x0[b, ..., :2])[on[b]]
            if len(d):
                assert (d == d[0]).all() and abs(d[0]) <= 12  # one shift per piece for both tracks
                shifted_any |= bool(d[0] != 0)
    assert shifted_any


def test_transpose_at_the_edge_of_the_range_stays_inside():
    x0 = torch.zeros(50, 8, 3, dtype=torch.long)
    x0[:, 0, 0] = MAX_PITCH - PITCH_OFFSET  # highest pitch: only downward shifts allowed
    x0[:, 1, 1] = MIN_PITCH - PITCH_OFFSET + 2  # bass two semitones above the bottom
    out = transpose(x0, TRIO, max_shift=6, generator=torch.Generator().manual_seed(1))
    shift = out[:, 0, 0] - x0[:, 0, 0]
    assert (shift <= 0).all() and (shift >= -2).all() and (out[:, 1, 1] - x0[:, 1, 1] == shift).all()
    assert len(set(shift.tolist())) == 3  # -2, -1, 0 all reachable


def test_roll_bars_rotates_each_piece_by_whole_bars_and_only_when_enabled():
    x0 = torch.arange(4 * 64 * 3).view(4, 64, 3)  # 4 pieces of 4 bars, every element distinct
    assert roll_bars(x0, enabled=False) is x0
    gen = torch.Generator().manual_seed(0)
    shifts = set()
    for _ in range(10):
        out = roll_bars(x0, enabled=True, generator=gen)
        for b in range(len(x0)):
            shift = int(out[b, 0, 0] - x0[b, 0, 0]) // 3  # the step the rolled piece starts at
            assert shift % 16 == 0  # whole bars: the bar grid is kept
            assert torch.equal(out[b], torch.roll(x0[b], -shift, dims=0))  # nothing lost, order kept
            shifts.add(shift)
    assert shifts == {0, 16, 32, 48}  # every start is reached


def test_sampler_resumes_mid_stream_and_splits_ranks():
    full = ResumableSampler(10, batch_size=3, seed=5)
    it = iter(full)
    stream = [next(it) for _ in range(3 * 12)]
    assert sorted(stream[:10]) == list(range(10))  # the first pass is a permutation
    resumed = iter(ResumableSampler(10, batch_size=3, seed=5, start_batch=4))
    assert [next(resumed) for _ in range(3 * 8)] == stream[12:]
    r0, r1 = (iter(ResumableSampler(10, 3, seed=5, rank=r, world_size=2)) for r in (0, 1))
    assert [next(r0) for _ in range(3)] + [next(r1) for _ in range(3)] == stream[:6]


def test_missing_dataset_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="make preprocess") as err:
        load_meta(tmp_path / "nothing")
    assert "nothing" in str(err.value)


def test_mismatched_dataset_is_refused(melody_dataset):
    with pytest.raises(DatasetError, match="num_classes"):
        check_meta(load_meta(melody_dataset), TRIO)
    with pytest.raises(DatasetError, match="does not match"):
        TokenDataModule(DataConfig(data=melody_dataset), "trio")


def test_datamodule_of_a_continued_run_starts_the_batch_stream_at_its_start_step(trio_dataset):
    config = DataConfig(data=trio_dataset, batch_size=2, num_workers=0)
    straight, continued = TokenDataModule(config, "trio", seed=3), TokenDataModule(config, "trio", seed=3,
                                                                                  start_step=2)
    for dm in (straight, continued):
        dm.setup("fit")
    stream = iter(straight.train_dataloader().sampler)
    skipped = [next(stream) for _ in range(4)]  # steps 0 and 1 at batch 2
    assert [next(stream) for _ in range(6)] == list(itertools.islice(continued.train_dataloader().sampler, 6))
    assert len(set(skipped)) == 4


def test_datamodule_reads_memory_mapped_arrays(trio_dataset):
    dm = TokenDataModule(DataConfig(data=trio_dataset, batch_size=4, num_workers=0), "trio")
    dm.setup()
    assert isinstance(dm.train_set.array, np.memmap)
    batch = next(iter(dm.val_dataloader()))
    assert batch.shape == (4, 1024, 3) and batch.dtype == torch.long
    meta = json.loads((trio_dataset / "meta.json").read_text())
    assert dm.steps == meta["steps"] == 1024


@pytest.mark.parametrize("val_masks", [1, 3])
def test_validation_sees_every_window_val_masks_times_in_order(trio_dataset, val_masks):
    dm = TokenDataModule(DataConfig(data=trio_dataset, batch_size=4, num_workers=0, val_masks=val_masks), "trio")
    dm.setup()
    seen = torch.cat(list(dm.val_dataloader()))
    windows = torch.from_numpy(np.asarray(dm.valid_set.array).astype(np.int64))
    assert torch.equal(seen, windows.repeat(val_masks, 1, 1))
