"""The reverse process of ASD3PM (spec section 3, thesis Algorithms 4 and 6): one sampler for every scenario.

Every conditioning scenario (unconditional, infilling, outpainting, interpolation, accompaniment, note-level)
is the same call with a different ``known`` mask (see :mod:`schmubert.conditioning`).

Shapes: ``x``/``x_t`` ``LongTensor[B, L, K]``; ``known`` ``BoolTensor[B, L, K]`` (True = keep); ``logits`` and
``probs`` lists of K tensors ``[B, L, C_k]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from tqdm.auto import tqdm

from schmubert.diffusion import AbsorbingDiffusion

Order = Literal["random", "confidence"]
ORDERS: tuple[str, ...] = ("random", "confidence")
#: ``guidance(probs, x_t, masked) -> probs``: moves the predicted x0 probabilities (thesis Algorithm 6).
Guidance = Callable[[list[torch.Tensor], torch.Tensor, torch.Tensor], list[torch.Tensor]]


def uniform(shape: Sequence[int], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device (a CPU generator reproduces on any device)."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(tuple(shape), generator=generator, device=gen_device).to(device)


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter ``[..., C]``: keep the fewest most probable classes whose mass reaches ``top_p``."""
    if top_p >= 1.0:
        return probs
    sorted_p, idx = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass of the classes ranked above each one
    sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
    filtered = torch.zeros_like(probs).scatter_(-1, idx, sorted_p)
    return filtered / filtered.sum(-1, keepdim=True)


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Categorical draw by inverse CDF: ``probs [N, C]``, ``u [N]`` uniform -> ``LongTensor[N]``."""
    cdf = probs.cumsum(-1)
    cdf = cdf / cdf[:, -1:].clamp_min(1e-12)
    idx = torch.searchsorted(cdf, u.unsqueeze(-1).to(cdf.dtype), right=True).squeeze(-1)
    return idx.clamp_(max=probs.shape[-1] - 1)


def predict_probs(logits: Sequence[torch.Tensor], temperature: float) -> list[torch.Tensor]:
    """Softmax of ``logits / temperature`` per track, in float32."""
    return [torch.softmax(lg.float() / temperature, dim=-1) for lg in logits]


def confidence_reveal(probs: list[torch.Tensor], masked: torch.Tensor, step: int) -> torch.Tensor:
    """Reveal ``round(masked / step)`` elements per sample, the most certain (highest max-probability) first.

    At step 1 every remaining masked element is revealed. Returns ``BoolTensor[B, L, K]``.
    """
    B = masked.shape[0]
    certainty = torch.stack([p.max(-1).values for p in probs], dim=-1)  # [B, L, K]
    certainty = certainty.masked_fill(~masked, -1.0).view(B, -1)
    n_masked = masked.view(B, -1).sum(1)
    count = n_masked if step == 1 else torch.round(n_masked.float() / step).long()
    ranks = certainty.argsort(dim=1, descending=True).argsort(dim=1)  # rank of each element per sample
    reveal = (ranks < count.unsqueeze(1)) & masked.view(B, -1)
    return reveal.view_as(masked)


def random_reveal(masked: torch.Tensor, step: int, diffusion: AbsorbingDiffusion,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Reveal each masked element with probability ``diffusion.reveal_probability(step)`` (1/step)."""
    u = uniform(masked.shape, generator, masked.device)
    return masked & (u < diffusion.reveal_probability(step))


def check_inputs(diffusion: AbsorbingDiffusion, x: torch.Tensor, known: torch.Tensor, steps: int,
                 temperature: float, top_p: float, order: str) -> None:
    if x.dim() != 3 or known.shape != x.shape:
        raise ValueError(f"x and known must both be [B, L, K]; got {tuple(x.shape)} and {tuple(known.shape)}")
    if x.shape[-1] != diffusion.num_tracks:
        raise ValueError(f"x has K={x.shape[-1]} tracks but the model has {diffusion.num_tracks}")
    if not 1 <= steps:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; expected one of {ORDERS}")


@torch.no_grad()
def sample(denoiser: torch.nn.Module, diffusion: AbsorbingDiffusion, x: torch.Tensor, known: torch.Tensor,
           steps: int, generator: torch.Generator | None = None, *, temperature: float = 1.0,
           top_p: float = 1.0, order: Order = "random", reuse: bool = True, guidance: Guidance | None = None,
           progress: bool = False, stats: dict | None = None) -> torch.Tensor:
    """Fill every unknown element of ``x`` by the reverse process; returns ``LongTensor[B, L, K]``.

    x: ``LongTensor[B, L, K]`` known tokens (values where ``~known`` are ignored); known:
    ``BoolTensor[B, L, K]`` (True = keep). steps: the number S of reverse steps (any S >= 1; S <= T as trained
    is the usual choice). order: 'random' reveals each masked element with probability 1/t (thesis
    Algorithm 4); 'confidence' reveals the same expected number, most certain first. reuse: skip the denoiser
    when ``x_t`` did not change since the last call (exact: the denoiser does not see t). guidance: a function
    moving the probabilities before the draw (thesis Algorithm 6). ``generator`` drives every random draw.
    ``stats`` (a dict) receives ``calls``, the number of denoiser calls.
    The result has no mask left and ``x[known]`` unchanged. Runs on the denoiser's device.
    """
    check_inputs(diffusion, x, known, steps, temperature, top_p, order)
    device = next(denoiser.parameters()).device
    x, known = x.to(device), known.to(device)
    mask_value = diffusion.mask_value(device)  # [K]
    x_t = torch.where(known, x, mask_value)
    masked = ~known
    logits, changed, calls = None, True, 0
    for step in tqdm(range(steps, 0, -1), desc="sampling", disable=not progress, leave=False):
        if not masked.any():
            break
        if logits is None or changed or not reuse:
            logits = denoiser(x_t)
            calls += 1
        if order == "random" and guidance is None:  # softmax only the rows drawn this step
            reveal = random_reveal(masked, step, diffusion, generator)
            rows = lambda k, where: torch.softmax(logits[k][where].float() / temperature, dim=-1)  # noqa: B023
        else:
            probs = predict_probs(logits, temperature)
            if guidance is not None:
                probs = guidance(probs, x_t, masked)
            if order == "confidence":
                reveal = confidence_reveal(probs, masked, step)
            else:
                reveal = random_reveal(masked, step, diffusion, generator)
            rows = lambda k, where: probs[k][where]  # noqa: B023
        x_t = reveal_draws(x_t, reveal, rows, len(logits), top_p, generator)
        masked &= ~reveal
        changed = bool(reveal.any())
    if stats is not None:
        stats["calls"] = calls
    return x_t


def reveal_draws(x_t: torch.Tensor, reveal: torch.Tensor, rows: Callable[[int, torch.Tensor], torch.Tensor],
                 num_tracks: int, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Draw x0 at the revealed elements only and write them into ``x_t``.

    ``rows(k, where)`` gives track k's probabilities at the elements ``where`` (``BoolTensor[B, L]``): ``[n, C_k]``.
    """
    x_t = x_t.clone()
    for k in range(num_tracks):
        where = reveal[..., k]  # [B, L]
        n = int(where.sum())
        if n == 0:
            continue
        p = top_p_filter(rows(k, where), top_p)  # [n, C_k]
        x_t[..., k][where] = draw(p, uniform((n,), generator, x_t.device))
    return x_t


def window_starts(length: int, window: int, hop: int) -> list[int]:
    """Starts of ``window``-step windows hopping by ``hop`` over ``length``; the last ends at the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window, hop))
    return starts + [length - window]


def sample_long(denoiser: torch.nn.Module, diffusion: AbsorbingDiffusion, x: torch.Tensor,
                known: torch.Tensor, steps: int, generator: torch.Generator | None = None, *,
                window: int, hop: int,
                progress: bool = False, **options) -> torch.Tensor:
    """:func:`sample` over a piece longer than the model's window: ``x``/``known`` ``[B, N, K]``, N > window.

    Windows of ``window`` steps slide by ``hop`` from the start; each window keeps what is known plus all that
    earlier windows generated (so each new window continues its ``window - hop`` steps of overlapping context)
    and fills the rest. ``options`` are passed to :func:`sample`. Returns ``LongTensor[B, N, K]``.
    """
    if not 0 < hop <= window:
        raise ValueError(f"hop must be in 1..window ({window}), got {hop}")
    x, known = x.clone(), known.clone()
    starts = window_starts(x.shape[1], window, hop)
    for start in tqdm(starts, desc="windows", disable=not progress, leave=False):
        span = slice(start, start + window)
        filled = sample(denoiser, diffusion, x[:, span], known[:, span], steps, generator, **options)
        x[:, span] = filled.to(x.device)
        known[:, span] = True
    return x
