// The editor page: two piano-roll panels, the toolbars, and the calls to the JSON API.
"use strict";

const $ = (id) => document.getElementById(id);
// A run's state is asked with a long poll: the server answers when the run ends, or after this many seconds
// with its progress (so the bar moves four times a second and the piece comes at once).
const POLL_WAIT_S = 0.25;

class ApiError extends Error {}

async function api(path, body, { raw = false, method } = {}) {
  const init = { method: method || (body === undefined ? "GET" : "POST") };
  if (body !== undefined) {
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError("the editor server does not answer (was it stopped?)");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (err) { /* not JSON */ }
    throw new ApiError(message);
  }
  return raw ? response.blob() : response.json();
}

class Editor {
  constructor(info) {
    this.info = info;
    this.instruments = modelInstruments(info);  // the lanes, pickers and patches: the model's instruments
    this.panels = [
      new PianoRoll($("panel-a"), info, "A"),
      new PianoRoll($("panel-b"), info, "B"),
    ];
    this.active = this.panels[0];
    this.clipboard = null;
    this.job = null;            // the run in progress: {id, panel, regions, began}
    this.lastLatencyMs = null;  // from "diffuse" to the updated roll, for the benchmark and the status line
    this.runs = 0;
    this.synth = new Synth();
    this.player = new Player(this.synth);
    this.panels.forEach((p) => {
      p.onactivate = () => this.activate(p);
      p.onchange = () => this.refresh();
    });
    this.activate(this.panels[0]);
    const tracks = this.instruments.map((i) => (i.voices > 1 ? `${i.name} ×${i.voices}` : i.name)).join(" + ");
    const extras = (info.velocity ? " · velocity" : "") + (info.meter ? " · meter" : "");
    $("model-info").textContent = `${info.checkpoint} · ${info.arch} · ${tracks}${extras} · ${info.bars} bars · T = ${info.timesteps}`;
    $("qpm").value = info.qpm;
    for (const [field, id] of [["steps", "steps"], ["order", "order"], ["schedule", "schedule"],
                               ["temperature", "temperature"], ["top_p", "top-p"], ["cfg_scale", "cfg-scale"],
                               ["repair", "repair"]]) {
      if (info.defaults && field in info.defaults) $(id).value = info.defaults[field];  // one source: the server
    }
    $("conditions").hidden = !info.attributes;
    $("dynamics-control").hidden = !(info.attributes && info.velocity);
    this.makePickers();
    for (const key of info.keys || []) $("key").add(new Option(key, key));
    $("new-validation").disabled = !info.validation_set;
    if (!info.validation_set) $("new-validation").title = "This checkpoint's validation set is not on this computer";
    this.fillInstruments();
    this.bind();
  }

  // --- messages ---------------------------------------------------------------------------------------------

  message(text, kind = "info") {
    const box = document.createElement("div");
    box.className = `message ${kind}`;
    const span = document.createElement("span");
    span.textContent = text;
    const close = document.createElement("button");
    close.textContent = "×";
    close.title = "Dismiss";
    close.onclick = () => box.remove();
    box.append(span, close);
    const area = $("messages");
    area.append(box);
    while (area.children.length > 6) area.firstChild.remove();
    if (kind === "info") setTimeout(() => box.remove(), 8000);
  }

  clearMessages() { $("messages").replaceChildren(); }

  async guard(action) {
    try {
      return await action();
    } catch (err) {
      this.message(err instanceof ApiError ? err.message : `unexpected error in the page: ${err}`, "error");
      return undefined;
    }
  }

  // --- panels -----------------------------------------------------------------------------------------------

  activate(panel) {
    this.active = panel;
    this.panels.forEach((p) => p.root.classList.toggle("active", p === panel));
    this.showSongTracks();
    this.refresh();
  }

  /** One picker per instrument (role) of the model, in the song-tracks toolbar: select#pick-ROLE. */
  makePickers() {
    const bar = $("song-tracks");
    for (const inst of this.instruments) {
      const label = document.createElement("label");
      label.append(inst.name + " ");
      const select = document.createElement("select");
      select.id = `pick-${inst.name}`;
      select.dataset.role = inst.name;
      select.onchange = () => this.pickTrack();
      label.append(select);
      bar.append(label);
    }
  }

  /** The track pickers: the active panel's song instruments, the chosen one selected for each role. */
  showSongTracks() {
    const song = this.active && this.active.song;
    $("song-tracks").hidden = !song;
    if (!song) return;
    for (const role of this.instruments) {
      const select = $(`pick-${role.name}`);
      const none = document.createElement("option");
      none.value = "none";
      none.textContent = "none";
      const options = [none];
      for (const inst of song.instruments) {
        if (inst.is_drum !== role.is_drum) continue;
        const o = document.createElement("option");
        o.value = String(inst.index);
        o.textContent = `${inst.name || "(no name)"} · ${inst.is_drum ? "drums" : "GM " + inst.program} · #${inst.index}`;
        options.push(o);
      }
      select.replaceChildren(...options);
      const chosen = song.assignment[role.name];
      select.value = chosen === null || chosen === undefined ? "none" : String(chosen);
    }
  }

  async pickTrack() {
    const p = this.active;
    if (!p.file || !p.song) return;
    const choices = {};
    for (const role of this.instruments) choices[role.name] = $(`pick-${role.name}`).value;
    await this.loadFile(p.file, p, choices);
  }

  other(panel) { return this.panels[0] === panel ? this.panels[1] : this.panels[0]; }

  refresh() {
    for (const p of this.panels) {
      p.root.querySelector(".piece-name").textContent = p.name || "";
      p.root.querySelector(".selection-info").textContent = this.describe(p.selection);
    }
    const p = this.active, busy = this.job !== null, has = p.selection.length > 0;
    $("undo").disabled = busy || !p.undoStack.length;
    $("redo").disabled = busy || !p.redoStack.length;
    $("diffuse").disabled = busy || (!has && !p.masked.length);
    $("regenerate").disabled = busy || !p.lastMask.length;
    $("cancel").disabled = !busy;
    $("mask").disabled = busy || !has;
    $("unmask").disabled = busy || !p.masked.length;
    for (const id of ["clear", "copy", "to-other"]) $(id).disabled = busy || !has;
    $("paste").disabled = busy || !this.clipboard;
    document.querySelectorAll("[data-transpose],[data-shift]").forEach((b) => { b.disabled = busy || !has; });
  }

  describe(regions) {
    if (!regions.length) return "";
    const spb = this.info.steps_per_bar;
    const parts = regions.map((r) => {
      const bars = r.start % spb === 0 && r.end % spb === 0
        ? `bars ${r.start / spb}-${r.end / spb}` : `steps ${r.start}-${r.end}`;
      return `${r.track} ${bars}`;
    });
    return "selected: " + (parts.length > 4 ? `${parts.slice(0, 4).join(", ")} …` : parts.join(", "));
  }

  busyWith(panel) {
    if (this.job && this.job.panel === panel) {
      this.message(`panel ${panel.title} is being diffused; wait for it or cancel it first`, "warning");
      return true;
    }
    return false;
  }

  async loadFile(file, panel = this.active, choices = {}) {
    if (!file || this.busyWith(panel)) return;
    if (file.size > 64 * 1024 * 1024) { this.message(`${file.name}: too large to be a MIDI file`, "error"); return; }
    const start = Math.max(0, parseInt($("start-bar").value, 10) || 0);
    const params = new URLSearchParams({ name: file.name, start_bar: String(start) });
    for (const [role, value] of Object.entries(choices)) params.append("track", `${role}=${value}`);  // as --track
    await this.guard(async () => {
      let res;
      try {
        res = await fetch(`/api/load?${params}`, {
          method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
      } catch (err) {
        throw new ApiError("the editor server does not answer (was it stopped?)");
      }
      const out = await res.json().catch(() => ({ error: `${file.name}: the server's answer was not readable` }));
      if (!res.ok) throw new ApiError(out.error || `${file.name}: could not be loaded (${res.status})`);
      panel.masked = []; panel.lastMask = []; panel.selection = [];
      panel.file = file;
      panel.song = out.song;
      panel.background = out.song ? out.song.background : [];
      panel.setPiece(out.piece, out.name);
      this.showSongTracks();
      if (out.song) {
        for (const choice of Object.values(out.song.choices || {})) this.message(`${out.name}: ${choice.text}`, "info");
      }
      if (out.qpm) $("qpm").value = Math.round(out.qpm);
      for (const w of out.warnings) this.message(w, "warning");
      this.message(`${out.name}: loaded (${out.bars_in_file} bars) into panel ${panel.title}`, "info");
    });
  }

  async newPiece(kind, panel = this.active) {
    if (this.busyWith(panel)) return;
    await this.guard(async () => {
      const out = await api(kind === "empty" ? "/api/empty" : "/api/validation");
      panel.masked = []; panel.lastMask = []; panel.selection = [];
      panel.song = null; panel.file = null; panel.background = [];
      panel.setPiece(out.piece, out.name);
      this.showSongTracks();
    });
  }

  // --- diffusion --------------------------------------------------------------------------------------------

  async mask() {
    const p = this.active;
    await this.guard(async () => {
      const out = await api("/api/mask", { tokens: p.piece.tokens, regions: p.selection });
      p.masked = p.masked.concat(p.selection);
      p.selection = [];
      p.draw();
      this.refresh();
      this.message(`masked ${out.masked} elements; Diffuse fills them`, "info");
    });
  }

  unmask() {
    this.active.masked = [];
    this.active.draw();
    this.refresh();
  }

  async diffuse(regions) {
    const p = this.active;
    if (this.job) return;
    regions = regions || (p.masked.length ? p.masked : p.selection);
    if (!regions.length) { this.message("select something to regenerate first", "warning"); return; }
    const began = performance.now();
    const body = {
      tokens: p.piece.tokens, regions,
      steps: parseInt($("steps").value, 10) || 32,
      order: $("order").value,
      schedule: $("schedule").value,
      temperature: parseFloat($("temperature").value) || 1.0,
      top_p: parseFloat($("top-p").value) || 1.0,
      note_density: $("density-on").checked ? parseFloat($("density").value) : null,
      song: p.song ? p.song.id : null,
    };
    if (p.piece.velocity) body.velocity = p.piece.velocity;  // the known notes' velocities (velocity models)
    if (this.info.attributes) Object.assign(body, this.conditions(regions));
    const started = await this.guard(() => api("/api/sample", body));
    if (!started) return;
    this.job = { id: started.job, panel: p, regions, began };
    p.pending = regions;
    p.masked = [];
    p.root.classList.add("busy");
    this.setProgress(started);
    this.refresh();
    p.draw();
    this.poll();
  }

  conditions(regions) {
    // key, guidance scale, and onsets / register / dynamics asked of each instrument in the selection
    // (schmubert.attributes: per instrument, all its voices together)
    const selected = [...new Set(regions.map((r) => r.track))];
    const drum = (name) => { const i = this.instruments.find((t) => t.name === name); return Boolean(i && i.is_drum); };
    const melodic = selected.filter((name) => !drum(name));
    const each = (names, value) => Object.fromEntries(names.map((name) => [name, value]));
    const out = {
      key: $("key").value,
      cfg_scale: parseFloat($("cfg-scale").value) || 0,
      repair: parseInt($("repair").value, 10) || 0,
      density: $("onsets-on").checked ? each(selected, parseFloat($("onsets").value)) : {},
      mean_pitch: $("pitch-on").checked ? each(melodic, parseFloat($("pitch").value)) : {},
    };
    if (this.info.velocity) out.dynamics = $("dynamics-on").checked ? each(selected, $("dynamics").value) : {};
    return out;
  }

  setProgress(state) {
    $("progress").value = state.progress || 0;
    const text = {
      queued: state.position ? `waiting for the model (${state.position} ahead)` : "starting…",
      running: `diffusing… ${Math.round(100 * (state.progress || 0))}%`,
    }[state.state];
    $("status").textContent = text || "";
  }

  async poll() {
    const job = this.job;
    if (!job) return;
    let state;
    try {
      state = await api(`/api/jobs/${job.id}?wait=${POLL_WAIT_S}`); // answers as soon as the run ends
    } catch (err) {
      this.finish(job);
      this.message(err.message, "error");
      return;
    }
    if (this.job !== job) return;
    this.setProgress(state);
    if (state.state === "queued" || state.state === "running") {
      this.poll();
      return;
    }
    this.finish(job);
    if (state.state === "done") {
      job.panel.lastMask = job.regions;
      job.panel.setPiece(state.piece);
      this.lastLatencyMs = performance.now() - job.began;
      this.runs += 1;
      $("progress").value = 1;
      $("status").textContent = `done: ${(this.lastLatencyMs / 1000).toFixed(2)} s (sampling ${state.seconds.toFixed(2)} s, seed ${state.seed})`;
      if (state.warning) this.message(state.warning, "warning");
    } else if (state.state === "cancelled") {
      $("status").textContent = "cancelled; nothing changed";
      $("progress").value = 0;
    } else {
      $("status").textContent = "failed";
      this.message(state.error || "sampling failed", "error");
    }
  }

  finish(job) {
    job.panel.pending = [];
    job.panel.root.classList.remove("busy");
    this.job = null;
    job.panel.draw();
    this.refresh();
  }

  async cancel() {
    const job = this.job;
    if (!job) return;
    $("status").textContent = "cancelling…";
    await this.guard(() => api(`/api/jobs/${job.id}/cancel`, {}));
  }

  // --- edits ------------------------------------------------------------------------------------------------

  undo() { if (!this.busyWith(this.active)) this.active.undo(); }
  redo() { if (!this.busyWith(this.active)) this.active.redo(); }

  async edit(op, amount = 0, panel = this.active, extra = {}) {
    if (this.job) return;
    const regions = extra.regions || panel.selection;
    if (!regions.length) { this.message("select something first", "warning"); return; }
    await this.guard(async () => {
      const out = await api("/api/edit", {
        op, amount, tokens: panel.piece.tokens, velocity: panel.piece.velocity, regions, ...extra });
      panel.setPiece(out.piece);
      if (op === "shift") {
        panel.setSelection(panel.selection.map((r) => ({
          ...r, start: Math.max(0, r.start + amount), end: Math.min(panel.steps, r.end + amount) }))
          .filter((r) => r.end > r.start));
      }
    });
  }

  copy() {
    const p = this.active;
    if (!p.selection.length) return;
    this.clipboard = { tokens: p.piece.tokens, velocity: p.piece.velocity, regions: p.selection.map((r) => ({ ...r })) };
    this.message(`copied ${this.describe(p.selection).replace("selected: ", "")}`, "info");
    this.refresh();
  }

  async paste(target = this.active, offset) {
    const clip = this.clipboard;
    if (!clip || this.job) return;
    if (offset === undefined) {
      const from = Math.min(...clip.regions.map((r) => r.start));
      offset = target.selection.length ? Math.min(...target.selection.map((r) => r.start)) - from : 0;
    }
    await this.edit("paste", offset, target, { regions: clip.regions, source: clip.tokens,
                                               source_velocity: clip.velocity });
    target.setSelection(clip.regions.map((r) => ({
      ...r, start: Math.max(0, r.start + offset), end: Math.min(target.steps, r.end + offset) }))
      .filter((r) => r.end > r.start));
  }

  async copyToOther() {
    this.copy();
    const target = this.other(this.active);
    await this.paste(target, 0);
  }

  // --- playback, export -------------------------------------------------------------------------------------

  instrument(list, id) { return list.find((i) => String(i.program) === $(id).value) || list[0]; }

  /** The patch of each instrument: melody and bass as chosen in the toolbar, the others by their program. */
  patches() {
    const out = {};
    for (const inst of this.instruments) if (!inst.is_drum) out[inst.name] = patchFor(inst.program);
    out.melody = this.instrument(MELODY_INSTRUMENTS, "melody-instrument").patch;
    out.bass = this.instrument(BASS_INSTRUMENTS, "bass-instrument").patch;
    return out;
  }

  togglePlay() {
    if (this.player.playing) { this.stopPlayback(); return; }
    const p = this.active;
    const loop = $("loop").checked && p.selection.length
      ? [Math.min(...p.selection.map((r) => r.start)), Math.max(...p.selection.map((r) => r.end))] : null;
    const from = loop ? loop[0] : (p.selection.length ? Math.min(...p.selection.map((r) => r.start)) : 0);
    p.loop = loop;
    this.playing = p;
    // the player counts time: a grid with PAD (bars of other meters) plays each bar for its real length
    const timed = Object.fromEntries(Object.entries(p.piece.notes).map(([name, list]) => [
      name, list.map((n) => [p.real(n[0]), p.real(n[1]), ...n.slice(2)])]));
    this.player.play(timed, {
      qpm: Math.min(400, Math.max(20, parseFloat($("qpm").value) || 120)), from: p.real(from),
      loop: loop && [p.real(loop[0]), p.real(loop[1])], steps: p.realSteps,
      drumPitches: this.info.drum_pitches,
      patches: this.patches(),
      onposition: (real) => { const step = p.gridOf(real); p.cursor = step; p.reveal(step); p.draw(); },
      onend: () => this.stopPlayback(),
    });
    $("play").textContent = "■ Stop";
  }

  stopPlayback() {
    this.player.stop();
    if (this.playing) { this.playing.cursor = null; this.playing.loop = null; this.playing.draw(); }
    this.playing = null;
    $("play").textContent = "▶ Play";
  }

  download(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  fileStem(panel) {
    const stem = (panel.name || "piece").replace(/\.(mid|midi)$/i, "").replace(/[^\w.-]+/g, "_");
    return `${stem}-schmubert`;
  }

  async downloadMidi() {
    const p = this.active;
    if (p.song && !$("trio-only").checked) {
      await this.guard(async () => {
        const blob = await api("/api/export/song", { song: p.song.id, tokens: p.piece.tokens,
                                                     velocity: p.piece.velocity }, { raw: true });
        this.download(blob, `${this.fileStem(p)}.mid`);
      });
      return;
    }
    await this.guard(async () => {
      const programs = { melody: this.instrument(MELODY_INSTRUMENTS, "melody-instrument").program,
                         bass: this.instrument(BASS_INSTRUMENTS, "bass-instrument").program };
      const known = Object.fromEntries(Object.entries(programs).filter(([k]) => k in p.piece.tokens));
      const blob = await api("/api/export/midi",
        { tokens: p.piece.tokens, velocity: p.piece.velocity, programs: known, qpm: parseFloat($("qpm").value) || 120 },
        { raw: true });
      this.download(blob, `${this.fileStem(p)}.mid`);
    });
  }

  async downloadPng() {
    const p = this.active;
    this.download(await p.toBlob(), `${this.fileStem(p)}.png`);
  }

  // --- wiring -----------------------------------------------------------------------------------------------

  fillInstruments() {
    for (const [id, list] of [["melody-instrument", MELODY_INSTRUMENTS], ["bass-instrument", BASS_INSTRUMENTS]]) {
      const select = $(id);
      for (const inst of list) {
        const o = document.createElement("option");
        o.value = String(inst.program);
        o.textContent = inst.name;
        select.append(o);
      }
      const track = id.split("-")[0];
      if (!this.instruments.some((t) => t.name === track)) select.parentElement.style.display = "none";
    }
  }

  bind() {
    $("file").addEventListener("change", async (e) => {
      await this.loadFile(e.target.files[0]);
      e.target.value = "";  // the same file can be opened again
    });
    for (const p of this.panels) {
      p.root.addEventListener("dragover", (e) => { e.preventDefault(); });
      p.root.addEventListener("drop", (e) => {
        e.preventDefault();
        this.activate(p);
        if (e.dataTransfer.files.length) this.loadFile(e.dataTransfer.files[0], p);
      });
    }
    $("new-empty").onclick = () => this.newPiece("empty");
    $("new-validation").onclick = () => this.newPiece("validation");
    $("download-midi").onclick = () => this.downloadMidi();
    $("download-png").onclick = () => this.downloadPng();
    $("mask").onclick = () => this.mask();
    $("unmask").onclick = () => this.unmask();
    $("diffuse").onclick = () => this.diffuse();
    $("regenerate").onclick = () => this.diffuse(this.active.lastMask);
    $("cancel").onclick = () => this.cancel();
    $("undo").onclick = () => this.undo();
    $("redo").onclick = () => this.redo();
    document.querySelectorAll("[data-transpose]").forEach((b) => {
      b.onclick = () => this.edit("transpose", parseInt(b.dataset.transpose, 10));
    });
    document.querySelectorAll("[data-shift]").forEach((b) => {
      b.onclick = () => this.edit("shift", parseInt(b.dataset.shift, 10));
    });
    $("clear").onclick = () => this.edit("clear");
    $("copy").onclick = () => this.copy();
    $("paste").onclick = () => this.paste();
    $("to-other").onclick = () => this.copyToOther();
    $("select-all").onclick = () => this.active.selectAll();
    $("select-none").onclick = () => this.active.setSelection([]);
    $("play").onclick = () => this.togglePlay();
    $("zoom-in").onclick = () => this.panels.forEach((p) => p.zoom(1.5));
    $("zoom-out").onclick = () => this.panels.forEach((p) => p.zoom(1 / 1.5));
    $("zoom-fit").onclick = () => this.panels.forEach((p) => p.fit());
    $("help-button").onclick = () => $("help").showModal();
    document.addEventListener("keydown", (e) => this.key(e));
  }

  key(e) {
    if (e.target.closest && e.target.closest("input, select, textarea, dialog")) return;
    const ctrl = e.ctrlKey || e.metaKey;
    const k = e.key;
    const act = (fn) => { e.preventDefault(); fn(); };
    if (ctrl && (k === "z" || k === "Z")) act(() => (e.shiftKey ? this.redo() : this.undo()));
    else if (ctrl && k === "y") act(() => this.redo());
    else if (ctrl && k === "c") act(() => this.copy());
    else if (ctrl && k === "v") act(() => this.paste());
    else if (ctrl && k === "a") act(() => this.active.selectAll());
    else if (ctrl) return;
    else if (k === "Enter") act(() => this.diffuse());
    else if (k === "r" || k === "R") act(() => this.diffuse(this.active.lastMask));
    else if (k === "m" || k === "M") act(() => this.mask());
    else if (k === " ") act(() => this.togglePlay());
    else if (k === "Escape") act(() => (this.active.masked.length ? this.unmask() : this.active.setSelection([])));
    else if (k === "Delete" || k === "Backspace") act(() => this.edit("clear"));
    else if (k === "ArrowUp") act(() => this.edit("transpose", e.shiftKey ? 12 : 1));
    else if (k === "ArrowDown") act(() => this.edit("transpose", e.shiftKey ? -12 : -1));
    else if (k === "ArrowLeft") act(() => this.edit("shift", e.altKey ? -1 : -16));
    else if (k === "ArrowRight") act(() => this.edit("shift", e.altKey ? 1 : 16));
  }
}

async function boot() {
  let info;
  try {
    info = await api("/api/info");
  } catch (err) {
    $("model-info").textContent = `cannot reach the editor server: ${err.message}`;
    return;
  }
  const editor = new Editor(info);
  window.editor = editor;
  await editor.newPiece("empty", editor.panels[0]);
  await editor.newPiece("empty", editor.panels[1]);
  editor.panels.forEach((p) => { p.undoStack = []; p.resize(); });
  editor.refresh();
  document.body.dataset.ready = "true";
}

boot();
