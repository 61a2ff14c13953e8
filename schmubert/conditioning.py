"""Builders of ``known`` masks (``BoolTensor[B, L, K]``, True = keep): the scenarios of the thesis.

Conditioning is only a choice of which elements start known (spec section 3). Bars are counted from 0 on the
16-step grid; a range ``(start, end)`` covers bars ``start`` up to, not including, ``end``. A bar of another meter
is still one 16-step slot (``schmubert.meter``; a bar longer than 16 steps two): its PAD steps must stay known in
every scenario, so the sampler never draws them: :func:`keep_pad` (or ``pad=`` of each builder) makes them known.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from schmubert.tokens import NO_EVENT, NOTE_OFF, STEPS_PER_BAR, Track, pad_mask

Shape = Sequence[int]  # (B, L, K)
BarRange = tuple[int, int]


def num_bars(shape: Shape) -> int:
    return shape[1] // STEPS_PER_BAR


def check_range(rng: BarRange, bars: int) -> BarRange:
    """Check a bar range against a window of ``bars`` bars; ``ValueError`` with a clear reason if outside."""
    start, end = rng
    if not 0 <= start < end <= bars:
        raise ValueError(f"bar range {start}:{end} is outside the piece (bars 0:{bars}, end exclusive)")
    return start, end


def parse_bar_range(text: str) -> BarRange:
    """``"32:48"`` -> ``(32, 48)``; ``ValueError`` naming the text if malformed."""
    try:
        start, end = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"bad bar range {text!r}; expected START:END such as 32:48") from None
    if end <= start:
        raise ValueError(f"bad bar range {text!r}: the end must come after the start")
    return start, end


def keep_pad(known: torch.Tensor, x: torch.Tensor, tracks: Sequence[Track]) -> torch.Tensor:
    """``known`` ``[B, L, K]`` with every PAD element of ``x`` ``[B, L, K]`` known (a bar's slot past its end,
    ``schmubert.meter``): the sampler keeps known elements, so PAD is never drawn nor counted among the masked."""
    return known | pad_mask(x, tracks).to(known.device)


def in_context(known, x, tracks: Sequence[Track]) -> bool:
    """Whether every column with elements to generate also keeps some of its own (PAD aside): an infill or a
    continuation, where each generated track is heard around its gap; not an accompaniment, whose generated
    tracks are drawn whole, nor a new piece. ``known``, ``x``: ``(L, K)``, numpy or torch."""
    kept = known & ~pad_mask(x, tracks)
    return all(bool(kept[:, k].any()) for k in range(known.shape[-1]) if not bool(known[:, k].all()))


def _with_pad(known: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    return known if pad is None else known | pad.to(known.device)


def unconditional(shape: Shape, device: torch.device | str | None = None, *, pad: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Nothing known: generate everything (but ``pad``, a BoolTensor broadcastable to ``shape``: the PAD
    elements, ``tokens.pad_mask``; every builder takes it)."""
    return _with_pad(torch.zeros(tuple(shape), dtype=torch.bool, device=device), pad)


def infill(shape: Shape, ranges: Sequence[BarRange], track_ids: Sequence[int] | None = None,
           device: torch.device | str | None = None, *, pad: torch.Tensor | None = None) -> torch.Tensor:
    """Known everywhere except bars in ``ranges`` (on ``track_ids``, default all tracks)."""
    known = torch.ones(tuple(shape), dtype=torch.bool, device=device)
    tracks = list(range(shape[2])) if track_ids is None else list(track_ids)
    for start, end in (check_range(r, num_bars(shape)) for r in ranges):
        known[:, start * STEPS_PER_BAR:end * STEPS_PER_BAR, tracks] = False
    return _with_pad(known, pad)


def regenerate_tracks(shape: Shape, track_ids: Sequence[int], device: torch.device | str | None = None, *,
                      pad: torch.Tensor | None = None) -> torch.Tensor:
    """Accompaniment: the tracks ``track_ids`` are generated, the others kept."""
    bad = [k for k in track_ids if not 0 <= k < shape[2]]
    if bad:
        raise ValueError(f"track index {bad} outside the piece's {shape[2]} tracks")
    known = torch.ones(tuple(shape), dtype=torch.bool, device=device)
    known[..., list(track_ids)] = False
    return _with_pad(known, pad)


def continuation(shape: Shape, keep_bars: int, device: torch.device | str | None = None, *,
                 pad: torch.Tensor | None = None) -> torch.Tensor:
    """Outpainting: the first ``keep_bars`` bars are kept, the rest generated."""
    if not 0 <= keep_bars <= num_bars(shape):
        raise ValueError(f"cannot keep {keep_bars} bars of a {num_bars(shape)}-bar piece")
    known = unconditional(shape, device)
    known[:, :keep_bars * STEPS_PER_BAR] = True
    return _with_pad(known, pad)


def interpolation(shape: Shape, keep_start: int, keep_end: int, device: torch.device | str | None = None, *,
                  pad: torch.Tensor | None = None) -> torch.Tensor:
    """The first ``keep_start`` and the last ``keep_end`` bars kept, the span between generated."""
    bars = num_bars(shape)
    if keep_start < 0 or keep_end < 0 or keep_start + keep_end >= bars:
        raise ValueError(f"cannot keep {keep_start} + {keep_end} bars of a {bars}-bar piece "
                         "and generate between")
    known = unconditional(shape, device)
    known[:, :keep_start * STEPS_PER_BAR] = True
    known[:, shape[1] - keep_end * STEPS_PER_BAR:] = True
    return _with_pad(known, pad)


def join_for_interpolation(first: torch.Tensor, second: torch.Tensor, keep_start: int, keep_end: int
                           ) -> torch.Tensor:
    """Tokens ``[..., L, K]``: the start of ``first``, the end of ``second`` (the middle from ``first``; it is
    masked anyway)."""
    x = first.clone()
    if keep_end:
        x[..., -keep_end * STEPS_PER_BAR:, :] = second[..., -keep_end * STEPS_PER_BAR:, :]
    return x


def preserve_note_ends(x: torch.Tensor, known: torch.Tensor, out: torch.Tensor, tracks: Sequence[Track]
                       ) -> torch.Tensor:
    """Keep the notes before a generated span ending where they ended (``[..., L, K]`` tensors).

    The event that ends a note is the first step of the next span; when that step is generated and the sampler
    wrote ``no event`` (hold) there, the kept note would run into the new bars. This writes a note-off instead
    (a no-op when nothing sounds), so every note outside the span stays as it was.
    """
    out = out.clone()
    for k, track in enumerate(tracks):
        if track.is_drum:
            continue
        enters = ~known[..., 1:, k] & known[..., :-1, k]  # step s generated, step s - 1 kept
        ended = x[..., 1:, k] != NO_EVENT  # the input had an event there: the kept note ended
        fix = enters & ended & (out[..., 1:, k] == NO_EVENT)
        out[..., 1:, k] = torch.where(fix, torch.full_like(out[..., 1:, k], NOTE_OFF), out[..., 1:, k])
    return out
