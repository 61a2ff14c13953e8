"""Experiment: self-distillation through time (SDTT) of a shipped model's infilling sampler (issue 44).

Deschenaux & Gulcehre 2024 ("Beyond autoregression: fast LLMs via self-distillation through time") train a
masked-diffusion student to take in one step what its teacher takes in two. Here the teacher is a shipped model
with its copy prior, sampling as the editor does (an infill told the piece's own key: no guidance, outside-in
order, cosine schedule, copy sharpness 8) in ``--teacher-steps`` S steps; the student, a copy of its network
inside the same copy prior, learns to take S/2.

One iteration: ``--batch`` training windows, each with a gap of 4-32 bars on all tracks or a random subset (as a
user selects them); the teacher samples them (:func:`schmubert.sampling.sample`, the sample CLI's plan) and every
denoiser call is recorded. For each student step j the input is the teacher's state before its call 2j; the
target at every element still masked there is, as in SDTT, the token the teacher drew in its calls 2j and 2j+1
where it drew one, else the teacher's predicted distribution at call 2j+1 (its copy prior mixed in). The loss is
the KL divergence from the target to the student's prediction (its copy prior mixed in, the same sharpness).

The student is written as a ``.safetensors`` file beside the teacher's kind (same hyper-parameters, copy prior and
held-out windows), every ``--save-every`` iterations and at the end, so any measuring tool takes it::

    python experiments/distill_sdtt.py --checkpoint pretrained:trio --data data/processed/lakh-trio/train.npy \\
        --out runs/sdtt-trio/student.safetensors --minutes 45
    python experiments/bench_decoding.py --checkpoint runs/sdtt-trio/student.safetensors --samples 0 \\
        --riff-pieces 16 --settings "s4:steps=4,cfg_interval=0"
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decoding import config_for  # noqa: E402

import schmubert.sample as sample_module  # noqa: E402
from schmubert.attributes import Attributes  # noqa: E402
from schmubert.backbones.registry import call  # noqa: E402
from schmubert.checkpoints import METADATA_KEY, LoadedModel, load_model  # noqa: E402
from schmubert.copy_prior import CopyPrior, copy_log_probs, sharpened  # noqa: E402
from schmubert.files import write_atomic  # noqa: E402
from schmubert.sample import Scenario  # noqa: E402
from schmubert.sampling import sample  # noqa: E402
from schmubert.tokens import STEPS_PER_BAR  # noqa: E402

GAP_BARS = (4, 8, 16, 32)


class Recorder(nn.Module):
    """The teacher's denoiser, keeping every call's input ``x_t`` and output log-probabilities."""

    def __init__(self, denoiser: nn.Module):
        super().__init__()
        self.denoiser = denoiser
        self.calls: list[tuple[torch.Tensor, list[torch.Tensor]]] = []
        self.tracks = getattr(denoiser, "tracks", None)
        self.conditional = bool(getattr(denoiser, "conditional", False))
        self.predicts_velocity = False

    def forward(self, x_t: torch.Tensor, attrs: Attributes | None = None, velocity: torch.Tensor | None = None):
        out = call(self.denoiser, x_t, attrs, velocity)
        self.calls.append((x_t.clone(), [o.detach().clone() for o in out]))
        return out


def gaps(x0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``known (B, L, K)``: one gap per window, 4-32 bars, on every track or a random nonempty subset."""
    B, L, K = x0.shape
    bars = L // STEPS_PER_BAR
    known = np.ones_like(x0, dtype=bool)
    for b in range(B):
        n = int(rng.choice(GAP_BARS))
        start = int(rng.integers(0, bars - n + 1))
        tracks = np.arange(K) if rng.random() < 0.5 else rng.choice(K, size=int(rng.integers(1, K + 1)),
                                                                      replace=False)
        known[b, start * STEPS_PER_BAR:(start + n) * STEPS_PER_BAR, tracks] = False
    return known


def teacher_run(model: LoadedModel, x0: np.ndarray, known: np.ndarray, steps: int, seed: int
                ) -> tuple[list, torch.Tensor, Attributes | None, float]:
    """The teacher's calls, its result ``[B, L, K]``, what it was told, and the copy sharpness it used."""
    args = argparse.Namespace(steps=steps, batch_size=len(x0), seed=seed, precision="fp32")
    cfg = config_for({"steps": steps}, args, 1)
    told, plan = [], None
    for b in range(len(x0)):
        scen = Scenario(x0[b], known[b], "editor", [])
        plan = sample_module.decoding_plan(cfg, model, scen)  # the CLI's plan (in context: no guidance)
        told.append(sample_module.make_attributes(cfg, model, scen, torch.Generator().manual_seed(seed + b), plan))
    attrs = None if told[0] is None else Attributes.cat(told)
    recorder = Recorder(model.denoiser)
    generator = torch.Generator().manual_seed(seed)
    with sharpened(recorder, plan.copy_sharpness):
        out = sample(recorder, model.diffusion, torch.as_tensor(x0), torch.as_tensor(known), steps, generator,
                     plan.sampler, attributes=attrs, tracks=model.tracks)
    return recorder.calls, out, attrs, plan.copy_sharpness


def targets(calls: list, out: torch.Tensor, mask_value: torch.Tensor, j: int
            ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Student step ``j``: its input (the state before teacher call 2j), the target distribution per track
    ``[B, L, C_k]`` and the elements it is trained on ``[B, L, K]`` (masked in the input)."""
    x_in = calls[2 * j][0]
    later = calls[2 * j + 2][0] if 2 * j + 2 < len(calls) else out
    masked = x_in == mask_value
    drawn = masked & (later != mask_value)
    teacher = calls[min(2 * j + 1, len(calls) - 1)][1]
    out_targets = []
    for k, logp in enumerate(teacher):
        probs = logp.float().exp()
        C = probs.shape[-1]
        one_hot = nn.functional.one_hot(later[..., k].clamp(0, C - 1), C).float()
        out_targets.append(torch.where(drawn[..., k, None], one_hot, probs))
    return x_in, out_targets, masked


def student_log_probs(student: CopyPrior, x_t: torch.Tensor, attrs: Attributes | None) -> list[torch.Tensor]:
    """The student's prediction, its copy prior mixed in: what :class:`CopyPrior` returns, computed in log space
    (``logaddexp``) so that classes of probability 0 give no NaN gradient through a ``log(0)``."""
    logits = call(student.denoiser, x_t, attrs, None)
    visible = x_t < student.mask_value
    log_copy, log_gate = copy_log_probs(x_t, visible, student.num_classes, student.params, student.sharpness)
    return [torch.logaddexp(log_gate[..., k, 0, None] + torch.log_softmax(lg.float(), -1),
                            log_gate[..., k, 1, None] + log_copy[k]) for k, lg in enumerate(logits)]


def kl_loss(student: CopyPrior, x_in: torch.Tensor, attrs: Attributes | None, target: list[torch.Tensor],
            masked: torch.Tensor) -> torch.Tensor:
    """Mean over the masked elements of KL(target || student)."""
    logp = student_log_probs(student, x_in, attrs)
    total, count = x_in.new_zeros((), dtype=torch.float32), masked.sum().clamp_min(1)
    for k, (lp, tg) in enumerate(zip(logp, target, strict=True)):
        tg = tg / tg.sum(-1, keepdim=True).clamp_min(1e-12)
        term = torch.where(tg > 0, tg * (torch.log(tg.clamp_min(1e-30)) - lp), 0.0).sum(-1)
        total = total + term[masked[..., k]].sum()
    return total / count


def save(student: nn.Module, teacher: LoadedModel, out: Path, info: dict) -> None:
    """The student's network as a shipped model's ``.safetensors`` (the teacher's hyper-parameters, copy prior and
    held-out windows), written atomically."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(teacher.path), "pt") as f:
        meta = dict(f.metadata())
    hp = json.loads(meta[METADATA_KEY])
    hp["distilled"] = info
    tensors = {k: v.detach().half().contiguous() for k, v in student.state_dict().items()}
    write_atomic(out, lambda tmp: save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(hp)}),
                 overwrite=True)
    held = teacher.path.with_name(f"{teacher.path.stem}-heldout.npz")
    if held.is_file():
        shutil.copyfile(held, out.with_name(f"{out.stem}-heldout.npz"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python experiments/distill_sdtt.py", description=__doc__.splitlines()[0],
                                allow_abbrev=False)
    p.add_argument("--checkpoint", default="pretrained:trio", help="the teacher (a model with a copy prior)")
    p.add_argument("--init", default=None, help="the student's starting weights (default: the teacher's)")
    p.add_argument("--data", type=Path, required=True, help="training windows (train.npy), never held-out ones")
    p.add_argument("--out", type=Path, required=True, help="the student's .safetensors")
    p.add_argument("--teacher-steps", type=int, default=8, help="the teacher's steps; the student takes half")
    p.add_argument("--batch", type=int, default=4, help="windows per iteration (x S/2 student examples)")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--minutes", type=float, default=45.0, help="training time")
    p.add_argument("--save-every", type=int, default=100, help="iterations between saves")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    teacher = load_model(args.checkpoint)
    if not isinstance(teacher.denoiser, CopyPrior):
        raise SystemExit(f"{args.checkpoint}: the teacher carries no copy prior")
    start = teacher if args.init is None else load_model(args.init)
    student = copy.deepcopy(start.denoiser)  # a CopyPrior around a copy of the network
    for param in student.params.parameters():
        param.requires_grad_(False)
    student.eval()  # no dropout: the student is fine-tuned to sample, as the teacher does
    optimizer = torch.optim.AdamW(student.denoiser.parameters(), lr=args.lr, weight_decay=0.0)
    windows = np.load(args.data, mmap_mode="r")
    mask_value = teacher.diffusion.mask_value(teacher.device)
    began, it, losses = time.perf_counter(), 0, []
    while time.perf_counter() - began < args.minutes * 60:
        x0 = np.asarray(windows[rng.choice(len(windows), args.batch, replace=False)], dtype=np.int64)
        known = gaps(x0, rng)
        calls, out, attrs, sharpness = teacher_run(teacher, x0, known, args.teacher_steps, args.seed * 10**6 + it)
        optimizer.zero_grad()
        loss_sum = 0.0
        with sharpened(student, sharpness):
            for j in range(args.teacher_steps // 2):
                if 2 * j >= len(calls):
                    break
                x_in, target, masked = targets(calls, out, mask_value, j)
                loss = kl_loss(student, x_in, attrs, target, masked) / (args.teacher_steps // 2)
                loss.backward()
                loss_sum += float(loss.detach())
        nn.utils.clip_grad_norm_(student.denoiser.parameters(), 1.0)
        optimizer.step()
        losses.append(loss_sum)
        it += 1
        if it % 10 == 0:
            print(f"iteration {it}: KL {np.mean(losses[-10:]):.4f} ({time.perf_counter() - began:.0f} s)",
                  flush=True)
        if it % args.save_every == 0:
            save(student.denoiser, teacher, args.out, {"method": "sdtt", "teacher": args.checkpoint,
                                                       "teacher_steps": args.teacher_steps, "iterations": it})
    save(student.denoiser, teacher, args.out, {"method": "sdtt", "teacher": args.checkpoint,
                                               "teacher_steps": args.teacher_steps, "iterations": it})
    print(f"{it} iterations in {time.perf_counter() - began:.0f} s; student: {args.out}")


if __name__ == "__main__":
    main()
