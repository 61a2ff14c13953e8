"""The editor's web server: the page, its static files and the JSON API (FastAPI on uvicorn).

The API is documented in ``docs/editor.md`` and, machine-readably, at ``/openapi.json``. The model is loaded once;
sampling runs queue for it in :class:`schmubert.editor.jobs.Sampler`. Every bad request or unusable file is an
HTTP 4xx with ``{"error": "<one sentence naming the file or field and the reason>"}``; nothing the client sends
becomes a server-side path, uploads are read into memory only and size-limited, and the server stays up after
any request.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import ipaddress
import itertools
import socket
import sys
import threading
import time
import webbrowser
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from schmubert import __version__, decoding, sample
from schmubert.attributes import NUM_KEYS, key_name
from schmubert.checkpoints import LoadedModel, default_checkpoint, held_out_pieces, held_out_velocity, load_model
from schmubert.config import add_arguments, arg, from_args
from schmubert.editor import pieces
from schmubert.editor.jobs import Busy, Job, Options, Sampler
from schmubert.editor.pieces import PieceError
from schmubert.sampling import Order
from schmubert.tokens import (
    BASS_PROGRAMS,
    DECODE_QPM,
    DRUM_CLASS_NAMES,
    DRUM_CLASS_PITCHES,
    MELODY_PROGRAMS,
    STEPS_PER_BAR,
    VELOCITY_BINS,
    bin_to_velocity,
    instruments,
    tokens_to_midi,
)

STATIC = Path(__file__).parent / "static"
LOOPBACK_NAMES = ["127.0.0.1", "localhost"]
#: The longest long poll of GET /api/jobs/{id} (seconds); the page asks for less, to show progress meanwhile.
MAX_WAIT = 10.0


# --- request bodies (the schema in /openapi.json) ------------------------------------------------------------


#: The sampling options a request leaves out (the editor's defaults, :class:`schmubert.editor.jobs.Options`).
DEFAULTS = Options()


class RegionIn(BaseModel):
    track: str = Field(description="instrument, e.g. 'bass' or 'piano' (all its voices), or a column ('piano.2')")
    start: int = Field(description="first step (16 per bar)")
    end: int = Field(description="step after the last one (end exclusive)")


class PieceIn(BaseModel):
    tokens: dict[str, list[int]] = Field(description="{track: one token per step}, as returned in a piece")
    velocity: dict[str, list[int]] | None = Field(None, description="velocity models: {track: one velocity bin "
                                                                    "per step (0 = no onset)}, as returned in a "
                                                                    "piece")


class MaskIn(PieceIn):
    regions: list[RegionIn] = Field(description="the selection to mask")


class SampleIn(MaskIn):
    steps: int = Field(DEFAULTS.steps, description="reverse diffusion steps S (default from the quality curve)")
    order: Order = Field(DEFAULTS.order, description="unmasking order")
    schedule: Literal["linear", "cosine", "square"] = Field(
        DEFAULTS.schedule, description="how many masked elements each step reveals (see schmubert.sampling)")
    temperature: float = Field(DEFAULTS.temperature, description="softmax temperature")
    top_p: float = Field(DEFAULTS.top_p, description="nucleus sampling mass (1 = off)")
    note_density: float | None = Field(None, description="guidance target: onsets per bar (null = off)")
    density_tracks: list[str] = Field([], description="tracks whose onsets count (default: the masked ones)")
    seed: int | None = Field(None, description="random seed (null: a new take each time)")
    key: str = Field("piece", description="models with attributes: the key they are told: 'piece' (the piece's "
                                          "own), 'any' (none), or one like 'D:minor', 'Bb:major'")
    cfg_scale: float | None = Field(DEFAULTS.cfg_scale, description="classifier-free guidance scale of the "
                                                                   "attributes (0 = the conditional model alone; "
                                                                   "null: the model's default, /api/info)")
    cfg_interval: float = Field(DEFAULTS.cfg_interval, ge=0.0, le=1.0, description="share of the steps, from the "
                                "first, that use guidance (the rest one conditional pass; see schmubert.sampling)")
    repair: int | None = Field(DEFAULTS.repair, description="models with attributes: rounds drawing again the bars "
                                                            "that miss their asked onsets or register (and a take "
                                                            "in another key than asked); 0 = off; null: the "
                                                            "model's default, /api/info")
    repair_steps: int | None = Field(DEFAULTS.repair_steps, ge=1, le=256, description="reverse steps of each "
                                     "repair round (null: the model's default, /api/info)")
    network_every: int = Field(DEFAULTS.network_every, ge=1, le=4096, description="models with a copy prior: "
                               "compute the network on every n-th step only, the copy prior mixed in afresh at "
                               "every step (1: every step; see schmubert.sampling)")
    density: dict[str, float] = Field({}, description="models with attributes: onsets per bar asked per track "
                                                      "over the selection, e.g. {'melody': 8}")
    mean_pitch: dict[str, float] = Field({}, description="models with attributes: register, the mean MIDI pitch "
                                                         "asked per melodic track over the selection, e.g. "
                                                         "{'bass': 40}")
    dynamics: dict[str, float | str] = Field({}, description="models with velocity and attributes: the dynamics "
                                                            "asked per instrument over the selection, a mark "
                                                            "(ppp .. fff) or a MIDI velocity, e.g. {'piano': 'mf'}")
    song: str | None = Field(None, description="the song id /api/load returned, when the lanes show a song: a "
                                               "take that changes nothing names its instruments")


class EditIn(MaskIn):
    op: Literal["transpose", "shift", "clear", "paste"] = Field(
        description="transpose: semitones; shift: move by `amount` steps; clear: silence; paste: write the "
                    "regions of `source` into `tokens`, `amount` steps later")
    amount: int = Field(0, description="semitones (transpose) or steps (shift, paste)")
    source: dict[str, list[int]] | None = Field(None, description="paste: the grid the regions are copied from")
    source_velocity: dict[str, list[int]] | None = Field(None, description="paste: the source's velocity bins")


class SongExportIn(PieceIn):
    song: str = Field(description="the song id /api/load returned")


class ExportIn(PieceIn):
    programs: dict[str, int] = Field({}, description="General MIDI program per melodic track, e.g. {'melody': 4}")
    qpm: float = Field(DECODE_QPM, description="tempo in quarter notes per minute")
    regions: list[RegionIn] = Field([], description="PNG only: a region to shade")


#: ``/api/load?track=piano=2&track=melody=Vocals``: the song's instrument for roles of the model.
TRACK_QUERY = Query(None, description="the song's instrument for a role of the model, ROLE=INDEX|NAME|none "
                                      "(repeatable), e.g. piano=2; as the sample CLI's --track")


# --- the app -------------------------------------------------------------------------------------------------


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def model_info(model: LoadedModel, validation_set: bool) -> dict[str, Any]:
    tracks = model.tracks
    shipped = decoding.model_sampler(DEFAULTS.sampler(), model)  # the editor's defaults, the model's filled in
    return {
        "version": __version__,
        "checkpoint": model.path.name,
        "arch": model.hparams.get("arch"),
        "tracks": [{"name": t.name, "is_drum": t.is_drum, "num_classes": t.num_classes, "mask_id": t.mask_id,
                    "program": t.program, "instrument": t.instrument} for t in tracks],
        "instruments": [{"name": name, "columns": [tracks[k].name for k in ks], "voices": len(ks),
                         "is_drum": tracks[ks[0]].is_drum, "program": tracks[ks[0]].program}
                        for name, ks in instruments(tracks)],
        "velocity": sample.predicts_velocity(model),
        "meter": sample.reads_meter(model),
        "velocity_bins": [int(v) for v in bin_to_velocity(list(range(1, VELOCITY_BINS + 1)))],
        "steps": model.steps, "bars": model.steps // STEPS_PER_BAR, "steps_per_bar": STEPS_PER_BAR,
        "timesteps": model.diffusion.T, "qpm": DECODE_QPM,
        "drum_classes": list(DRUM_CLASS_NAMES), "drum_pitches": list(DRUM_CLASS_PITCHES),
        "programs": {"melody": [MELODY_PROGRAMS.start, MELODY_PROGRAMS.stop - 1],
                     "bass": [BASS_PROGRAMS.start, BASS_PROGRAMS.stop - 1]},
        "validation_set": validation_set,
        "attributes": model.conditional,
        "keys": [key_name(k) for k in range(NUM_KEYS)],
        "defaults": {**{k: getattr(DEFAULTS, k) for k in ("steps", "order", "schedule", "temperature", "top_p",
                                                          "cfg_interval")},
                     "cfg_scale": shipped.guidance_scale(),
                     "repair": shipped.repair_rounds(), "repair_steps": shipped.repair_step_count()},
    }


def job_json(sampler: Sampler, job: Job) -> dict[str, Any]:
    out: dict[str, Any] = {"job": job.id, "state": job.state, "progress": round(job.progress, 4),
                           "position": sampler.position(job), "seed": job.seed, "error": job.error,
                           "warning": job.warning,
                           "seconds": None if job.seconds is None else round(job.seconds, 3)}
    if job.state == "done" and job.result is not None:
        out["piece"] = pieces.piece_json(job.result, sampler.model.tracks, job.result_velocity)
    return out


def create_app(model: LoadedModel, max_upload_bytes: int = 4 << 20, max_queued: int = 8,
               allowed_hosts: list[str] | None = None, sampler_thread: bool = True) -> FastAPI:
    """The editor as an ASGI app around a loaded model. ``allowed_hosts``: the Host headers accepted (the
    loopback names by default, which stops DNS-rebinding pages from reaching a laptop's editor).
    ``sampler_thread``: the jobs run in a worker thread of their own (False: the caller runs
    ``app.state.sampler.serve()``, as :func:`run` does in the main thread)."""
    sampler = Sampler(model, max_queued=max_queued, thread=sampler_thread)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        sampler.close()

    app = FastAPI(title="SCHmUBERT editor", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Piano-roll editor API: load, mask, sample with progress, edit, export.")
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_NAMES)
    app.state.sampler = sampler
    tracks, L = model.tracks, model.steps
    plotting = threading.Lock()
    songs: OrderedDict[str, pieces.SongView] = OrderedDict()  # uploaded songs, newest last (kept in memory)
    song_ids = itertools.count(1)
    held_out = held_out_pieces(model)  # shipped with the model, or its dataset's valid.npy; read once
    velocity_model, metered = sample.predicts_velocity(model), sample.reads_meter(model)
    held_velocity = held_out_velocity(model) if velocity_model and held_out is not None else None

    def piece(tokens: np.ndarray, velocity: np.ndarray | None = None) -> dict[str, Any]:
        """A piece for the page; a velocity model's always carries bins (none known: 0)."""
        if velocity_model and velocity is None:
            velocity = np.zeros_like(tokens)
        return pieces.piece_json(tokens, tracks, velocity if velocity_model else None)

    @app.middleware("http")
    async def limit_bodies(request: Request, call_next):
        if request.method in ("POST", "PUT"):
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return error(411, "send the request with a Content-Length header")
            if int(length) > max_upload_bytes:
                return error(413, f"the request is {int(length) / 2**20:.1f} MiB; the editor accepts at most "
                                  f"{max_upload_bytes / 2**20:.1f} MiB")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(400, f"bad request: {where or 'body'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(PieceError)
    async def piece_error(request: Request, exc: PieceError):
        return error(400, str(exc))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        return error(500, f"internal error ({type(exc).__name__}); the server is still running")

    def grid(tokens: dict[str, list[int]]) -> np.ndarray:
        return pieces.tokens_from_json(tokens, tracks, L, pad=metered)

    def bins(velocity: dict[str, list[int]] | None, field: str = "velocity") -> np.ndarray | None:
        """A request's velocity bins (velocity models only; others ignore them)."""
        return pieces.velocity_from_json(velocity, tracks, L, field) if velocity_model else None

    def regions(body: MaskIn, need: bool = True) -> list[pieces.Region]:
        out = pieces.regions_from_json([r.model_dump() for r in body.regions], tracks, L)
        if need and not out:
            raise PieceError("select something first (drag over bars and tracks, or click a note or a track)")
        return out

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/info", summary="The model: tracks, window, vocabulary, drum classes")
    def info() -> dict[str, Any]:
        return model_info(model, held_out is not None)

    @app.post("/api/load", summary="Upload a MIDI file (the raw bytes as the body)")
    async def load(request: Request, name: str = Query("upload.mid", max_length=200),
                   start_bar: int = Query(0, ge=0),
                   track: list[str] | None = TRACK_QUERY,
                   melody_track: str | None = Query(None, max_length=200, description="index, name or none "
                                                                                      "(= track melody=...)"),
                   bass_track: str | None = Query(None, max_length=200),
                   drum_track: str | None = Query(None, max_length=200),
                   time_signature: str | None = Query(
                       None, max_length=12, description="read the song's bars in this meter from its first "
                       "downbeat: 4/4 or 2/2; a model built with meter also 3/4, 6/8 ...")) -> Any:
        data = await request.body()
        if len(data) > max_upload_bytes:
            return error(413, f"{name}: larger than {max_upload_bytes / 2**20:.1f} MiB")
        display = Path(name).name or "upload.mid"  # shown in messages only; never used as a path
        track = track or []
        if len(track) > 64 or any(len(t) > 200 for t in track):
            raise PieceError("track: at most 64 choices of at most 200 characters each")
        asked = sample.SampleConfig(track=list(track), melody_track=melody_track, bass_track=bass_track,
                                    drum_track=drum_track, time_signature=time_signature)
        try:  # the sample CLI's rules: a role of the model's set, one choice per role; a meter the model reads
            choices = sample.role_choices(asked, model)
            signature = sample.time_signature(asked, model)
        except ValueError as err:
            raise PieceError(str(err)) from None
        up = await run_in_threadpool(pieces.read_upload, data, display, model, start_bar)
        out = {"piece": piece(up.tokens, up.velocity), "name": up.name, "warnings": up.warnings,
               "bars_in_file": up.bars_in_file, "qpm": up.qpm, "song": None}
        try:
            view = await run_in_threadpool(pieces.read_song_view, data, display, model, start_bar, choices,
                                           signature)
        except PieceError as err:
            if choices or signature:
                raise
            out["warnings"].append(f"{err}; the download holds the model's tracks only")
            return out
        song_id = f"s{next(song_ids)}"
        songs[song_id] = view
        while len(songs) > 16:
            songs.popitem(last=False)
        out["piece"] = piece(view.original, view.velocity)
        out["song"] = view.json(song_id)
        out["warnings"] = [w for w in up.warnings if w != up.meter_warning] + view.notes  # its bars are read
        return out

    @app.get("/api/empty", summary="An empty piece of the model's window")
    def empty() -> dict[str, Any]:
        return {"piece": piece(np.zeros((L, len(tracks)), dtype=np.int64)), "name": "empty"}

    @app.get("/api/validation", summary="A random piece of the checkpoint's validation set")
    def validation(seed: int | None = None) -> Any:
        if held_out is None:
            raise PieceError("this model's validation set is not on this machine; upload a MIDI file instead")
        x, source = sample.pick_piece(*held_out, np.random.default_rng(seed))
        x = sample.crop(x, 0, L // STEPS_PER_BAR, source)
        velocity = None
        if held_velocity is not None:
            index = int(source.rsplit("[", 1)[-1].rstrip("]"))
            velocity = sample.crop(np.asarray(held_velocity[index], dtype=np.int64), 0, L // STEPS_PER_BAR, source)
        return {"piece": piece(x, velocity), "name": f"validation piece {source.rsplit('[', 1)[-1]}"}

    @app.post("/api/mask", summary="The piece with the selection masked (what the sampler starts from)")
    def mask(body: MaskIn) -> dict[str, Any]:
        x = grid(body.tokens)
        known = pieces.with_pad(pieces.known_mask((1, L, len(tracks)), regions(body))[0].numpy(), x, tracks)
        return {"piece": piece(pieces.masked(x, known, tracks), bins(body.velocity)),
                "masked": int((~known).sum())}

    @app.post("/api/sample", summary="Queue a sampling run over the masked selection; poll /api/jobs/{job}")
    def start(body: SampleIn) -> Any:
        x = grid(body.tokens)
        known = pieces.with_pad(pieces.known_mask((1, L, len(tracks)), regions(body))[0].numpy(), x, tracks)
        view = songs.get(body.song) if body.song else None
        if view is not None:
            known[view.steps:] = True  # slots past the song's bars in the lanes are never drawn
        options = Options(steps=body.steps, order=body.order, schedule=body.schedule,
                          temperature=body.temperature, top_p=body.top_p,
                          note_density=body.note_density, density_tracks=body.density_tracks, seed=body.seed,
                          key=body.key, cfg_scale=body.cfg_scale, cfg_interval=body.cfg_interval,
                          repair=body.repair, repair_steps=body.repair_steps, network_every=body.network_every,
                          density=body.density, register=body.mean_pitch, dynamics=body.dynamics)
        try:
            job = sampler.submit(x, known, options, view, bins(body.velocity))
        except Busy as err:
            return error(429, str(err))
        except ValueError as err:
            return error(400, str(err))
        return job_json(sampler, job)

    @app.get("/api/jobs/{job_id}", summary="A run's state and progress; its piece once done")
    def status(job_id: str, wait: float = Query(0.0, ge=0.0, le=MAX_WAIT,
                                                description="seconds to wait for the run to end before "
                                                            "answering (a long poll); 0: at once")) -> Any:
        job = sampler.get(job_id)
        if job is None:
            return error(404, f"no run {job_id!r} (finished runs are kept for a while)")
        sampler.wait(job, wait)
        return job_json(sampler, job)

    @app.post("/api/jobs/{job_id}/cancel", summary="Cancel a queued or running run")
    def cancel(job_id: str) -> Any:
        job = sampler.cancel(job_id)
        return error(404, f"no run {job_id!r}") if job is None else job_json(sampler, job)

    @app.post("/api/edit", summary="Transpose, shift, clear or paste a selection")
    def edit(body: EditIn) -> dict[str, Any]:
        x, sel = grid(body.tokens), regions(body)
        source = None if body.source is None else grid(body.source)
        y, velocity = pieces.edit(body.op, x, sel, body.amount, tracks, bins(body.velocity), source,
                                  bins(body.source_velocity, "source_velocity"))
        return {"piece": piece(y, velocity)}

    @app.post("/api/export/midi", summary="The piece as a MIDI file", response_class=Response)
    def export_midi(body: ExportIn) -> Response:
        x = grid(body.tokens)
        check_programs(body.programs, tracks)
        if not 20 <= body.qpm <= 400:
            raise PieceError(f"tempo {body.qpm} is outside 20-400 quarter notes per minute")
        buf = io.BytesIO()
        velocity = bins(body.velocity)
        tokens_to_midi(x, list(tracks), qpm=body.qpm, programs=body.programs,
                       velocity=None if velocity is None else pieces.onset_velocity(x, velocity, tracks)).write(buf)
        return Response(buf.getvalue(), media_type="audio/midi",
                        headers={"Content-Disposition": 'attachment; filename="schmubert.mid"'})

    @app.post("/api/export/song", summary="The whole uploaded song with the edited bars spliced in (MIDI)",
              response_class=Response)
    def export_song(body: SongExportIn) -> Response:
        view = songs.get(body.song)
        if view is None:
            raise PieceError(f"no song {body.song!r} (the editor keeps the last 16 uploads); open the file again")
        data = view.export(grid(body.tokens), tracks, bins(body.velocity))
        return Response(data, media_type="audio/midi",
                        headers={"Content-Disposition": 'attachment; filename="schmubert-song.mid"'})

    @app.post("/api/export/png", summary="The piano roll as a PNG (the sample CLI's picture)",
              response_class=Response)
    def export_png(body: ExportIn) -> Response:
        from schmubert.render import pianoroll, plt

        x = grid(body.tokens)
        known = pieces.with_pad(pieces.known_mask((1, L, len(tracks)), regions(body, need=False))[0].numpy(), x,
                                tracks)
        buf = io.BytesIO()
        with plotting:  # pyplot is not thread-safe; requests run in a thread pool
            fig = pianoroll(x, tracks, ~known)
            try:
                fig.savefig(buf, dpi=100, format="png")
            finally:
                plt.close(fig)
        return Response(buf.getvalue(), media_type="image/png")

    return app


def check_programs(programs: dict[str, int], tracks) -> None:
    """Programs must keep each track's role, so that the exported file loads back onto the same lanes."""
    ranges = {"melody": MELODY_PROGRAMS, "bass": BASS_PROGRAMS}
    for name, program in programs.items():
        if name not in ranges or name not in [t.name for t in tracks]:
            raise PieceError(f"programs: no melodic track {name!r}")
        if program not in ranges[name]:
            raise PieceError(f"programs.{name}: {program} is not a {name} program "
                             f"({ranges[name].start}-{ranges[name].stop - 1})")


# --- running it ----------------------------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; ``OSError`` with a clear reason if the address is taken or not ours."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on connections of a socket that says so; with proto 0 each
    # response (headers and body written apart) waited about 40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another --port") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Running:
    """A server started in a background thread (the command line's, beside its model, and for tests, benchmarks
    and embedding)."""

    def __init__(self, app: FastAPI, sock: socket.socket):
        import uvicorn

        self.sock = sock
        host, port = sock.getsockname()[:2]
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '127.0.0.1') else host}:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            raise RuntimeError("the editor server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


def start_background(model: LoadedModel, host: str = "127.0.0.1", port: int = 0, **options) -> Running:
    return Running(create_app(model, **options), bind(host, port))


# --- command line ---------------------------------------------------------------------------------------------


@dataclass
class EditorConfig:
    """Options of ``python -m schmubert.editor``."""

    checkpoint: Path | None = arg(None, "model checkpoint (.ckpt, .safetensors or pretrained:NAME, e.g. "
                                  "pretrained:trio); default: the newest one under --runs, else pretrained:trio")
    runs: Path = arg(Path("runs"), "training output folder searched for the newest checkpoint")
    host: str = arg("127.0.0.1", "address to listen on; anything but loopback lets other machines use the "
                                 "editor and this computer's CPU (a warning is printed)")
    port: int = arg(8765, "port to listen on (0: any free port)")
    browser: bool = arg(True, "open the web browser on the page (--no-browser: do not)")
    device: str = arg("auto", "torch device: auto, cpu, cuda, ...")
    max_upload_mb: float = arg(4.0, "largest accepted upload or request, in MiB")
    max_queued: int = arg(8, "sampling runs allowed to wait for the model at once")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m schmubert.editor", description="A browser piano-roll editor: upload MIDI, select, "
        "diffuse, listen, download.", epilog="examples:\n  python -m schmubert.editor --checkpoint "
        "pretrained:trio\n  python -m schmubert.editor --checkpoint runs/demo-finetune/checkpoints/last.ckpt",
        formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    add_arguments(p, EditorConfig)
    return p


def run(cfg: EditorConfig) -> None:
    """Load the model, listen, open the browser, serve until interrupted. ``ValueError``/``OSError`` for bad
    options, a missing checkpoint or a taken port."""
    path = cfg.checkpoint if cfg.checkpoint is not None else default_checkpoint(cfg.runs)
    model = load_model(path, sample.resolve_device(cfg.device))
    sock = bind(cfg.host, cfg.port)
    loopback = is_loopback(cfg.host)
    if not loopback:
        print(f"warning: listening on {cfg.host}, not on this computer only: anyone who can reach this address "
              "can use the editor (there is no login). Use the default --host 127.0.0.1 unless you mean it.",
              file=sys.stderr)
    app = create_app(model, int(cfg.max_upload_mb * 2**20), cfg.max_queued,
                     allowed_hosts=None if loopback and ":" not in cfg.host else ["*"], sampler_thread=False)
    port = sock.getsockname()[1]
    url = f"http://{'127.0.0.1' if loopback or cfg.host in ('0.0.0.0', '::') else cfg.host}:{port}/"
    print(f"SCHmUBERT editor: {url}  (model {model.path}, {len(model.tracks)} tracks, "
          f"{model.steps // STEPS_PER_BAR} bars; Ctrl+C stops it)")
    if cfg.browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    server = Running(app, sock)  # HTTP in a thread; the model's jobs in this one, which loaded it (jobs module)
    try:
        app.state.sampler.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    cfg = from_args(EditorConfig, parser().parse_args(argv))
    try:
        run(cfg)
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

