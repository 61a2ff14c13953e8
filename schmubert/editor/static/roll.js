// The piano-roll panel: draws a piece on a canvas (only the visible part, so zoom and scroll stay fast),
// and turns mouse gestures into a selection of regions {track, start, end} (steps, end exclusive).
// It never interprets tokens: it draws the notes the server sent with the piece.
//
// One lane per instrument of the model (info.instruments): a polyphonic instrument's voices (piano: six token
// columns) are drawn together in one lane and one colour, so chords are chords, and a selection names the
// instrument (the server masks all its voices). A note's fourth number, where the model has velocity, shades it
// (soft notes pale). A piece whose bars have other meters (piece.layout: the real length of each 16-step slot)
// is drawn at their real length: the PAD steps after a short bar take no width, so a 3/4 bar is three quarters
// of a 4/4 one; selections and notes stay in grid steps, as the server sends and expects them.
"use strict";

const COLOURS = { melody: "#d62728", bass: "#1f77b4", drums: "#111111", bridge: "#2ca02c", piano: "#6a3d9a" };
const PALETTE = ["#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939"];
const GUTTER = 86;   // px: track names and pitch labels
const RULER = 22;    // px: bar numbers
const MELODIC_LANE = 170;
const CHORD_LANE = 220;  // a polyphonic instrument's lane
const DRUM_ROW = 13;
const NOTE_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];

/** The lanes of a model: its instruments (older servers: one per track). */
function modelInstruments(info) {
  return info.instruments || info.tracks.map((t) => ({
    name: t.name, columns: [t.name], voices: 1, is_drum: t.is_drum, program: t.program }));
}

function colourOf(name, index) {
  return COLOURS[name] || PALETTE[index % PALETTE.length];
}

class PianoRoll {
  constructor(root, info, title) {
    this.info = info;
    this.title = title;
    this.tracks = modelInstruments(info);  // the lanes: instruments
    this.stepsPerBar = info.steps_per_bar;
    this.root = root;
    this.piece = null;
    this.name = "";
    this.song = null;        // the opened song behind the lanes (id, instruments, assignment), if any
    this.file = null;        // its File, to load it again with other tracks
    this.background = [];    // the song's other instruments' notes [start, end, pitch], drawn grey
    this.selection = [];   // regions the user selected
    this.masked = [];      // regions marked for the next diffusion
    this.pending = [];     // regions being sampled right now
    this.lastMask = [];    // the regions the last diffusion filled (for Regenerate)
    this.undoStack = [];
    this.redoStack = [];
    this.cursor = null;    // playback position in steps
    this.loop = null;      // [start, end] steps while looping
    this.pxPerStep = 1;
    this.fitted = true;
    this.setLayout(null);
    this.onchange = () => {};
    this.onactivate = () => {};

    this.scroller = document.createElement("div");
    this.scroller.className = "scroller";
    this.canvas = document.createElement("canvas");
    this.canvas.className = "roll";
    this.spacer = document.createElement("div");
    this.spacer.className = "spacer";
    this.scroller.append(this.canvas, this.spacer);
    root.append(this.scroller);
    this.layoutLanes();
    this.scroller.addEventListener("scroll", () => this.draw());
    this.canvas.addEventListener("mousedown", (e) => this.mouseDown(e));
    this.canvas.addEventListener("wheel", (e) => this.wheel(e), { passive: false });
    new ResizeObserver(() => this.resize()).observe(this.scroller);
  }

  get steps() { return this.info.steps; }

  // --- bars: grid steps <-> drawn positions --------------------------------------------------------------------

  /** The bars of the piece: ``layout`` {lengths, continues} per 16-step slot (null: 16 real steps each). Builds
   *  ``pos`` (the drawn position, in real steps, of each grid step; a PAD step sits at its bar's end), the bar
   *  starts and each slot's bar number. */
  setLayout(layout) {
    const spb = this.stepsPerBar, slots = Math.ceil(this.steps / spb);
    this.layout = layout || null;
    this.pos = new Float64Array(slots * spb + 1);
    this.slotLength = [];
    this.slotBar = [];      // the bar (counted from 0) each slot belongs to
    this.slotContinues = [];
    let at = 0, bar = -1;
    for (let i = 0; i < slots; i++) {
      const length = layout ? (layout.lengths[i] || spb) : spb;
      const continues = layout ? Boolean(layout.continues[i]) : false;
      if (!continues || bar < 0) bar += 1;
      for (let j = 0; j < spb; j++) this.pos[i * spb + j] = at + Math.min(j, length);
      this.slotLength.push(length);
      this.slotBar.push(bar);
      this.slotContinues.push(continues);
      at += length;
    }
    this.pos[slots * spb] = at;
    this.realSteps = at;
    this.bars = bar + 1;
  }

  /** The drawn position (real steps) of a grid step (fractions between steps too). */
  real(step) {
    const s = Math.max(0, Math.min(this.steps, step));
    const i = Math.floor(s);
    return i >= this.steps ? this.pos[this.steps] : this.pos[i] + (s - i) * (this.pos[i + 1] - this.pos[i]);
  }

  /** The grid step (with its fraction) drawn at a real position: the last step at or before it. */
  gridOf(r) {
    if (!this.layout) return r;
    if (r <= 0) return r;
    if (r >= this.realSteps) return this.steps + (r - this.realSteps);
    let lo = 0, hi = this.steps;
    while (lo < hi) {  // the last step s with pos[s] <= r
      const mid = (lo + hi + 1) >> 1;
      if (this.pos[mid] <= r) lo = mid; else hi = mid - 1;
    }
    return lo + Math.min(1, r - this.pos[lo]);
  }

  /** Grid steps [lo, hi) widened to whole bars (a bar of two slots is selected whole). */
  wholeBars(lo, hi) {
    const spb = this.stepsPerBar;
    while (lo > 0 && this.slotContinues[lo / spb]) lo -= spb;
    while (hi < this.steps && this.slotContinues[hi / spb]) hi += spb;
    return [lo, hi];
  }

  // --- layout ----------------------------------------------------------------------------------------------

  layoutLanes() {
    let y = RULER;
    this.lanes = this.tracks.map((t, i) => {
      const h = t.is_drum ? DRUM_ROW * this.info.drum_classes.length : (t.voices > 1 ? CHORD_LANE : MELODIC_LANE);
      const lane = { track: t, top: y, height: h, low: 36, high: 84, colour: colourOf(t.name, i) };
      y += h + 6;
      return lane;
    });
    this.height = y;
  }

  fitPitchRanges() {
    for (const lane of this.lanes) {
      if (lane.track.is_drum) continue;
      const notes = (this.piece && this.piece.notes[lane.track.name]) || [];
      const name = lane.track.name;
      let low = name === "bass" ? 28 : lane.track.voices > 1 ? 48 : 55, high = name === "bass" ? 55 : 84;
      for (const n of notes) { low = Math.min(low, n[2]); high = Math.max(high, n[2]); }
      lane.low = Math.max(21, low - 2);
      lane.high = Math.min(108, high + 2);
    }
  }

  resize() {
    const width = this.scroller.clientWidth;
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.round(width * dpr);
    this.canvas.height = Math.round(this.height * dpr);
    this.canvas.style.width = width + "px";
    this.canvas.style.height = this.height + "px";
    if (this.fitted) this.pxPerStep = Math.max(0.25, (width - GUTTER - 4) / this.realSteps);
    this.spacer.style.width = (GUTTER + this.realSteps * this.pxPerStep + 4) + "px";
    this.draw();
  }

  zoom(factor, anchorX) {
    const width = this.scroller.clientWidth;
    anchorX = anchorX === undefined ? width / 2 : anchorX;
    const at = (anchorX - GUTTER + this.scroller.scrollLeft) / this.pxPerStep;  // real steps
    const fit = Math.max(0.25, (width - GUTTER - 4) / this.realSteps);
    this.pxPerStep = Math.min(32, Math.max(fit, this.pxPerStep * factor));
    this.fitted = this.pxPerStep <= fit;
    this.spacer.style.width = (GUTTER + this.realSteps * this.pxPerStep + 4) + "px";
    this.scroller.scrollLeft = Math.max(0, at * this.pxPerStep - (anchorX - GUTTER));
    this.draw();
  }

  fit() { this.fitted = true; this.resize(); }

  x(step) { return GUTTER + this.real(step) * this.pxPerStep - this.scroller.scrollLeft; }
  stepAt(x) { return this.gridOf((x - GUTTER + this.scroller.scrollLeft) / this.pxPerStep); }

  laneAt(y) {
    return this.lanes.findIndex((l) => y >= l.top && y < l.top + l.height + 6);
  }

  rowY(lane, pitch) {
    if (lane.track.is_drum) {
      const cls = this.info.drum_pitches.indexOf(pitch);
      return lane.top + cls * DRUM_ROW;
    }
    const rows = lane.high - lane.low + 1;
    return lane.top + (lane.high - pitch) * (lane.height / rows);
  }

  rowHeight(lane) {
    return lane.track.is_drum ? DRUM_ROW : lane.height / (lane.high - lane.low + 1);
  }

  /** Page coordinates of a step in a track's lane (used by tests and tools to drive the mouse). */
  clientPoint(step, trackName, fraction = 0.5) {
    const lane = this.lanes.find((l) => l.track.name === trackName);
    const box = this.canvas.getBoundingClientRect();
    return { x: box.left + this.x(step), y: box.top + lane.top + lane.height * fraction };
  }

  /** Scroll so that a step is visible. */
  reveal(step) {
    const x = this.x(step);
    if (x < GUTTER || x > this.scroller.clientWidth - 10) {
      this.scroller.scrollLeft = Math.max(0, this.real(step) * this.pxPerStep - (this.scroller.clientWidth - GUTTER) / 3);
    }
  }

  // --- state -----------------------------------------------------------------------------------------------

  setPiece(piece, name, { record = true } = {}) {
    if (record && this.piece) {
      this.undoStack.push({ piece: this.piece, name: this.name });
      if (this.undoStack.length > 200) this.undoStack.shift();
      this.redoStack = [];
    }
    this.piece = piece;
    if (name !== undefined) this.name = name;
    this.showLayout();
    this.fitPitchRanges();
    this.draw();
    this.onchange();
  }

  /** Bars of the current piece (its layout), the width of the roll following them. */
  showLayout() {
    const layout = (this.piece && this.piece.layout) || null;
    if (JSON.stringify(layout) === JSON.stringify(this.layout)) return;
    this.setLayout(layout);
    if (this.canvas.width) this.resize();
  }

  undo() { return this.travel(this.undoStack, this.redoStack); }
  redo() { return this.travel(this.redoStack, this.undoStack); }

  travel(from, to) {
    if (!from.length) return false;
    to.push({ piece: this.piece, name: this.name });
    const state = from.pop();
    this.piece = state.piece;
    this.name = state.name;
    this.showLayout();
    this.fitPitchRanges();
    this.draw();
    this.onchange();
    return true;
  }

  setSelection(regions) {
    this.selection = regions;
    this.draw();
    this.onchange();
  }

  /** Regions covering bars [b0, b1) (16-step slots, widened to whole bars) of the lanes k0..k1. */
  barRegions(b0, b1, k0, k1) {
    const out = [];
    const [start, end] = this.wholeBars(b0 * this.stepsPerBar, b1 * this.stepsPerBar);
    for (let k = Math.min(k0, k1); k <= Math.max(k0, k1); k++) {
      out.push({ track: this.tracks[k].name, start, end });
    }
    return out;
  }

  selectBars(b0, b1, trackNames) {
    const bars = this.steps / this.stepsPerBar;
    b0 = Math.max(0, Math.min(b0, bars - 1));
    b1 = Math.max(b0 + 1, Math.min(b1, bars));
    const names = trackNames || this.tracks.map((t) => t.name);
    this.setSelection(names.map((n) => ({ track: n, start: b0 * this.stepsPerBar, end: b1 * this.stepsPerBar })));
  }

  selectAll() { this.selectBars(0, this.steps / this.stepsPerBar); }

  noteAt(x, y) {
    const k = this.laneAt(y);
    if (k < 0 || !this.piece) return null;
    const lane = this.lanes[k];
    const step = this.stepAt(x);
    const slack = 3 / this.pxPerStep;
    for (const n of this.piece.notes[lane.track.name]) {
      const top = this.rowY(lane, n[2]);
      if (step >= n[0] - slack && step < n[1] + slack && y >= top - 1 && y <= top + this.rowHeight(lane) + 1) {
        return { track: lane.track.name, start: n[0], end: n[1] };
      }
    }
    return null;
  }

  // --- mouse -----------------------------------------------------------------------------------------------

  mouseDown(e) {
    this.onactivate();
    const box = this.canvas.getBoundingClientRect();
    const px = e.clientX - box.left, py = e.clientY - box.top;
    const add = e.shiftKey || e.ctrlKey || e.metaKey;
    const base = add ? this.selection.slice() : [];
    const bars = this.steps / this.stepsPerBar;
    if (px < GUTTER) {  // a track name: the whole track
      const k = this.laneAt(py);
      if (k >= 0) this.setSelection(base.concat([{ track: this.tracks[k].name, start: 0, end: this.steps }]));
      return;
    }
    const fine = e.altKey;  // Alt: single steps instead of whole bars
    const unit = fine ? 1 : this.stepsPerBar;
    const startStep = Math.max(0, Math.min(this.steps - 1, Math.floor(this.stepAt(px))));
    const inRuler = py < RULER;
    const k0 = inRuler ? 0 : Math.max(0, this.laneAt(py));
    const note = inRuler ? null : this.noteAt(px, py);
    let moved = false;
    const update = (ev) => {
      const qx = ev.clientX - box.left, qy = ev.clientY - box.top;
      const s1 = Math.max(0, Math.min(this.steps - 1, Math.floor(this.stepAt(qx))));
      if (Math.abs(qx - px) > 3 || Math.abs(qy - py) > 3) moved = true;
      if (!moved) return;
      let lo = Math.floor(Math.min(startStep, s1) / unit) * unit;
      let hi = Math.min(this.steps, (Math.floor(Math.max(startStep, s1) / unit) + 1) * unit);
      if (!fine) [lo, hi] = this.wholeBars(lo, hi);
      let k1 = inRuler ? this.tracks.length - 1 : this.laneAt(qy);
      if (k1 < 0) k1 = qy < RULER ? 0 : this.tracks.length - 1;
      const regions = [];
      for (let k = Math.min(k0, k1); k <= Math.max(k0, k1); k++) {
        regions.push({ track: this.tracks[k].name, start: lo, end: hi });
      }
      this.selection = base.concat(regions);
      this.draw();
    };
    const up = (ev) => {
      window.removeEventListener("mousemove", update);
      window.removeEventListener("mouseup", up);
      update(ev);
      if (!moved) {
        if (note) this.selection = base.concat([note]);
        else if (inRuler) {
          const b = Math.floor(startStep / this.stepsPerBar);
          this.selection = base.concat(this.barRegions(b, Math.min(b + 1, bars), 0, this.tracks.length - 1));
        } else this.selection = base;
      }
      this.draw();
      this.onchange();
    };
    window.addEventListener("mousemove", update);
    window.addEventListener("mouseup", up);
  }

  wheel(e) {
    if (e.ctrlKey || e.metaKey) {
      e.preventDefault();
      const box = this.canvas.getBoundingClientRect();
      this.zoom(e.deltaY < 0 ? 1.25 : 0.8, e.clientX - box.left);
    }  // a plain wheel scrolls the page; Shift+wheel (or a horizontal swipe) scrolls the roll
  }

  // --- drawing ---------------------------------------------------------------------------------------------

  draw(ctx, width, offset) {
    const offscreen = ctx !== undefined;
    if (!offscreen) {
      if (!this.canvas.width) return;
      ctx = this.canvas.getContext("2d");
      const dpr = window.devicePixelRatio || 1;
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      width = this.scroller.clientWidth;
    }
    const scroll = offscreen ? offset : this.scroller.scrollLeft;
    const X = (s) => GUTTER + this.real(s) * this.pxPerStep - scroll;
    const first = Math.max(0, Math.floor(this.gridOf(scroll / this.pxPerStep)) - 1);
    const last = Math.min(this.steps, Math.ceil(this.gridOf((scroll + width - GUTTER) / this.pxPerStep)) + 1);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, width, this.height);

    // lanes and rows
    for (const lane of this.lanes) {
      ctx.fillStyle = "#fafafa";
      ctx.fillRect(GUTTER, lane.top, width - GUTTER, lane.height);
      if (lane.track.is_drum) {
        for (let i = 0; i < this.info.drum_classes.length; i += 2) {
          ctx.fillStyle = "#f0f0f0";
          ctx.fillRect(GUTTER, lane.top + i * DRUM_ROW, width - GUTTER, DRUM_ROW);
        }
      } else {
        const rh = this.rowHeight(lane);
        for (let p = lane.low; p <= lane.high; p++) {
          if ([1, 3, 6, 8, 10].includes(p % 12)) {
            ctx.fillStyle = "#eeeeee";
            ctx.fillRect(GUTTER, this.rowY(lane, p), width - GUTTER, rh);
          }
          if (p % 12 === 0) {
            ctx.fillStyle = "#d8d8d8";
            ctx.fillRect(GUTTER, this.rowY(lane, p) + rh - 1, width - GUTTER, 1);
          }
        }
      }
    }

    // grid: beats at high zoom, bars (each at its real length), every 4th bar stronger; bar numbers
    const pxBar = this.pxPerStep * this.stepsPerBar;
    const labelEvery = pxBar >= 26 ? 1 : pxBar >= 12 ? 4 : 8;
    ctx.font = "11px sans-serif";
    ctx.textBaseline = "middle";
    const spb = this.stepsPerBar;
    for (let s = Math.floor(first / 4) * 4; s <= last; s += 4) {
      const slot = Math.floor(s / spb), within = s - slot * spb;
      if (slot < this.slotLength.length && within > 0 && within >= this.slotLength[slot]) continue;  // PAD
      const barStart = within === 0 && !(slot < this.slotLength.length && this.slotContinues[slot]);
      const bar = slot < this.slotBar.length ? this.slotBar[slot] : this.bars + slot - this.slotBar.length;
      const x = Math.round(X(s)) + 0.5;
      if (x < GUTTER) continue;
      if (barStart) {
        ctx.fillStyle = bar % 4 === 0 ? "#9a9a9a" : "#c8c8c8";
        ctx.fillRect(x, RULER - 4, 1, this.height - RULER + 4);
        if (bar % labelEvery === 0 && bar < this.bars) {
          ctx.fillStyle = "#333";
          ctx.fillText(String(bar), x + 3, RULER / 2);
        }
      } else if (this.pxPerStep >= 3) {
        ctx.fillStyle = "#e6e6e6";
        ctx.fillRect(x, RULER, 1, this.height - RULER);
      }
    }

    // masked, pending and selected regions
    const shade = (regions, style) => {
      for (const r of regions) {
        const lane = this.lanes.find((l) => l.track.name === r.track);
        if (!lane) continue;
        const x0 = Math.max(GUTTER, X(r.start)), x1 = Math.min(width, X(r.end));
        if (x1 <= x0) continue;
        style(x0, lane.top, x1 - x0, lane.height);
      }
    };
    shade(this.masked.concat(this.pending), (x, y, w, h) => {
      ctx.fillStyle = "#cfcfcf";
      ctx.fillRect(x, y, w, h);
      ctx.save();
      ctx.beginPath();
      ctx.rect(x, y, w, h);
      ctx.clip();
      ctx.strokeStyle = "#b0b0b0";
      ctx.lineWidth = 1;
      for (let d = -h; d < w; d += 8) {
        ctx.beginPath();
        ctx.moveTo(x + d, y + h);
        ctx.lineTo(x + d + h, y);
        ctx.stroke();
      }
      ctx.restore();
    });

    // the song's other instruments, grey, under the melodic lanes' notes (they are never changed)
    if (this.background && this.background.length) {
      ctx.fillStyle = "rgba(120, 120, 120, 0.28)";
      for (const lane of this.lanes) {
        if (lane.track.is_drum) continue;
        const rh = Math.max(2, this.rowHeight(lane) - 1);
        for (const n of this.background) {
          if (n[1] < first || n[0] > last || n[2] < lane.low || n[2] > lane.high) continue;
          ctx.fillRect(X(n[0]), this.rowY(lane, n[2]), Math.max(2, X(n[1]) - X(n[0]) - 1), rh);
        }
      }
    }

    // notes (hidden under a pending or masked region: those are about to be replaced)
    if (this.piece) {
      const hidden = this.masked.concat(this.pending);
      for (const lane of this.lanes) {
        const name = lane.track.name;
        const rh = Math.max(2, this.rowHeight(lane) - 1);
        const cover = hidden.filter((r) => r.track === name);
        const chosen = this.selection.filter((r) => r.track === name);
        for (const n of this.piece.notes[name]) {
          if (n[1] < first || n[0] > last) continue;
          if (cover.some((r) => n[0] >= r.start && n[0] < r.end)) continue;
          const x0 = X(n[0]);
          const w = Math.max(lane.track.is_drum ? 3 : 2, X(n[1]) - x0 - 1);
          const y = this.rowY(lane, n[2]);
          if (x0 + w < GUTTER) continue;
          ctx.fillStyle = lane.colour;
          if (n.length > 3) ctx.globalAlpha = 0.25 + 0.75 * Math.min(1, n[3] / 127);  // velocity as shade
          ctx.fillRect(x0, y, w, rh);
          ctx.globalAlpha = 1;
          if (w >= 6 && chosen.some((r) => n[0] >= r.start && n[0] < r.end)) {
            ctx.strokeStyle = "#ffb000";
            ctx.lineWidth = 1;
            ctx.strokeRect(x0 - 0.5, y - 0.5, w + 1, rh + 1);
          }
        }
      }
    }

    shade(this.selection, (x, y, w, h) => {
      ctx.fillStyle = "rgba(255, 200, 0, 0.22)";
      ctx.fillRect(x, y, w, h);
      ctx.strokeStyle = "rgba(220, 150, 0, 0.9)";
      ctx.lineWidth = 1;
      ctx.strokeRect(x + 0.5, y + 0.5, w - 1, h - 1);
    });

    if (this.loop && !offscreen) {
      ctx.fillStyle = "rgba(0, 150, 80, 0.35)";
      const x0 = Math.max(GUTTER, X(this.loop[0])), x1 = Math.min(width, X(this.loop[1]));
      if (x1 > x0) ctx.fillRect(x0, RULER - 5, x1 - x0, 5);
    }
    if (this.cursor !== null && !offscreen) {
      const x = X(this.cursor);
      if (x >= GUTTER) {
        ctx.fillStyle = "#00a050";
        ctx.fillRect(Math.round(x), RULER - 6, 2, this.height - RULER + 6);
      }
    }

    // gutter: track names and octave labels, drawn last so notes scroll under it
    ctx.fillStyle = "#f4f4f4";
    ctx.fillRect(0, 0, GUTTER, this.height);
    for (const lane of this.lanes) {
      ctx.fillStyle = lane.colour;
      ctx.fillRect(0, lane.top, 4, lane.height);
      ctx.save();  // the instrument's name, vertical along the lane (with its voices, if several)
      ctx.translate(15, lane.top + lane.height / 2);
      ctx.rotate(-Math.PI / 2);
      ctx.font = "bold 12px sans-serif";
      ctx.textAlign = "center";
      ctx.fillText(lane.track.voices > 1 ? `${lane.track.name} (${lane.track.voices} voices)` : lane.track.name, 0, 0);
      ctx.restore();
      ctx.font = "10px sans-serif";
      ctx.fillStyle = "#666";
      ctx.textAlign = "right";
      if (lane.track.is_drum) {
        this.info.drum_classes.forEach((c, i) => {
          ctx.fillText(c.replace("_", " "), GUTTER - 4, lane.top + i * DRUM_ROW + DRUM_ROW / 2);
        });
      } else {
        for (let p = lane.low; p <= lane.high; p++) {
          if (p % 12 === 0) {
            ctx.fillText(NOTE_NAMES[0] + (p / 12 - 1), GUTTER - 4, this.rowY(lane, p) + this.rowHeight(lane) / 2);
          }
        }
      }
      ctx.textAlign = "left";
    }
    ctx.fillStyle = "#999";
    ctx.fillRect(GUTTER - 1, 0, 1, this.height);
  }

  /** The whole piece drawn at a readable zoom, as a PNG blob (what the page shows, all bars). */
  toBlob() {
    const saved = this.pxPerStep;
    this.pxPerStep = Math.max(saved, 2);
    const width = GUTTER + this.realSteps * this.pxPerStep + 8;
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = this.height;
    const ctx = canvas.getContext("2d");
    this.draw(ctx, width, 0);
    this.pxPerStep = saved;
    this.draw();
    return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  }
}

window.PianoRoll = PianoRoll;
window.modelInstruments = modelInstruments;
