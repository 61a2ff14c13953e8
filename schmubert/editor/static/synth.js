// Playback synthesized in the browser with WebAudio: no soundfont, nothing fetched, works offline.
// Each instrument is a small oscillator/filter/envelope patch named after the General MIDI program it stands
// for (that program is written into the downloaded MIDI file); drums are synthesized from noise and sweeps.
// A note's velocity (the fourth number of a note, where the model has velocity) sets its gain.
"use strict";

const MELODY_INSTRUMENTS = [
  { name: "Piano", program: 0, patch: "piano" },
  { name: "Electric piano", program: 4, patch: "epiano" },
  { name: "Vibraphone", program: 11, patch: "vibes" },
  { name: "Organ", program: 16, patch: "organ" },
  { name: "Nylon guitar", program: 24, patch: "pluck" },
  { name: "Overdriven guitar", program: 29, patch: "drive" },
];
const BASS_INSTRUMENTS = [
  { name: "Finger bass", program: 33, patch: "fingerbass" },
  { name: "Acoustic bass", program: 32, patch: "upright" },
  { name: "Picked bass", program: 34, patch: "pickbass" },
  { name: "Synth bass", program: 38, patch: "synthbass" },
];

const midiHz = (p) => 440 * Math.pow(2, (p - 69) / 12);

/** The volume (0..1.3, a gain factor) of a MIDI velocity; a note without one plays at 0.8, as always. */
const velocityVolume = (v) => (v === undefined || v === null ? 0.8 : Math.max(0.05, Math.min(1.3, v / 100)));

/** The patch that stands for a General MIDI program (the instruments of a voice set: piano, guitar, ...). */
function patchFor(program) {
  if (program === 4 || program === 5) return "epiano";
  if (program < 8) return "piano";
  if (program < 16) return "vibes";
  if (program < 24) return "organ";
  if (program < 32) return "pluck";
  if (program < 40) return "fingerbass";
  if (program < 80) return "organ";
  return "drive";
}

class Synth {
  constructor() {
    this.ctx = null;
    this.log = [];  // the last notes played: [pitch, volume] (what a test can hear)
  }

  heard(pitch, volume) {
    this.log.push([pitch, volume]);
    if (this.log.length > 4096) this.log.splice(0, 1024);
  }

  start() {
    if (!this.ctx) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      this.ctx = new Ctx();
      this.master = this.ctx.createGain();
      this.master.gain.value = 0.5;
      const comp = this.ctx.createDynamicsCompressor();
      this.master.connect(comp).connect(this.ctx.destination);
      const n = this.ctx.sampleRate;  // one second of white noise, reused by every drum hit
      this.noise = this.ctx.createBuffer(1, n, this.ctx.sampleRate);
      const data = this.noise.getChannelData(0);
      for (let i = 0; i < n; i++) data[i] = Math.random() * 2 - 1;
      this.drive = this.ctx.createWaveShaper();
      const curve = new Float32Array(1024);
      for (let i = 0; i < 1024; i++) { const x = i / 512 - 1; curve[i] = Math.tanh(4 * x); }
      this.drive.curve = curve;
    }
    if (this.ctx.state === "suspended") this.ctx.resume();
    return this.ctx;
  }

  env(gain, t, attack, peak, decay, sustain, end, release) {
    const g = gain.gain;
    g.setValueAtTime(0.0001, t);
    g.linearRampToValueAtTime(peak, t + attack);
    g.setTargetAtTime(peak * sustain, t + attack, decay);
    g.setTargetAtTime(0.0001, Math.max(end, t + attack), release);
  }

  osc(type, hz, t, stop, dest, detune = 0) {
    const o = this.ctx.createOscillator();
    o.type = type;
    o.frequency.setValueAtTime(hz, t);
    o.detune.value = detune;
    o.connect(dest);
    o.start(t);
    o.stop(stop);
    return o;
  }

  /** A melodic note: MIDI pitch, start and end in AudioContext seconds, a patch name, volume 0..1. */
  note(patch, pitch, t, end, volume = 0.8) {
    const hz = midiHz(pitch);
    const out = this.ctx.createGain();
    out.connect(this.master);
    const stop = end + 1.0;
    const v = 0.22 * volume;
    this.heard(pitch, volume);
    if (patch === "piano") {
      this.env(out, t, 0.005, v, 0.5, 0.25, end, 0.12);
      this.osc("triangle", hz, t, stop, out);
      const h = this.ctx.createGain(); h.gain.value = 0.3; h.connect(out);
      this.osc("sine", hz * 2, t, stop, h);
    } else if (patch === "epiano") {
      this.env(out, t, 0.004, v, 0.8, 0.35, end, 0.2);
      const mod = this.ctx.createGain(); mod.gain.setValueAtTime(hz * 2, t);
      mod.gain.setTargetAtTime(hz * 0.2, t, 0.3);
      const carrier = this.osc("sine", hz, t, stop, out);
      this.osc("sine", hz * 1, t, stop, mod);
      mod.connect(carrier.frequency);
    } else if (patch === "vibes") {
      this.env(out, t, 0.003, v, 1.2, 0.2, end + 0.4, 0.4);
      const trem = this.ctx.createGain(); trem.connect(out);
      this.osc("sine", hz, t, stop + 0.5, trem);
      const lfo = this.ctx.createGain(); lfo.gain.value = 0.3; lfo.connect(trem.gain);
      this.osc("sine", 5.5, t, stop + 0.5, lfo);
    } else if (patch === "organ") {
      this.env(out, t, 0.01, v * 0.7, 0.1, 1.0, end, 0.05);
      [1, 2, 3, 4].forEach((m, i) => {
        const g = this.ctx.createGain(); g.gain.value = [1, 0.6, 0.35, 0.2][i]; g.connect(out);
        this.osc("sine", hz * m, t, stop, g);
      });
    } else if (patch === "pluck" || patch === "drive") {
      const lp = this.ctx.createBiquadFilter(); lp.type = "lowpass";
      lp.frequency.setValueAtTime(Math.min(12000, hz * 12), t);
      lp.frequency.setTargetAtTime(hz * 2, t, 0.25);
      if (patch === "drive") {
        const shaper = this.ctx.createWaveShaper(); shaper.curve = this.drive.curve;
        lp.connect(shaper).connect(out);
        this.env(out, t, 0.005, v * 0.6, 0.6, 0.6, end, 0.08);
      } else {
        lp.connect(out);
        this.env(out, t, 0.002, v, 0.35, 0.15, end, 0.1);
      }
      this.osc("sawtooth", hz, t, stop, lp);
      this.osc("sawtooth", hz, t, stop, lp, 7);
    } else {  // basses
      const lp = this.ctx.createBiquadFilter(); lp.type = "lowpass";
      const bright = { fingerbass: 5, upright: 3, pickbass: 9, synthbass: 14 }[patch] || 5;
      lp.frequency.setValueAtTime(hz * bright, t);
      lp.frequency.setTargetAtTime(hz * 2, t, patch === "synthbass" ? 0.12 : 0.3);
      lp.Q.value = patch === "synthbass" ? 8 : 1;
      lp.connect(out);
      this.env(out, t, 0.004, v * 1.3, 0.4, patch === "upright" ? 0.2 : 0.55, end, 0.06);
      const type = { fingerbass: "triangle", upright: "sine", pickbass: "sawtooth", synthbass: "square" }[patch];
      this.osc(type || "triangle", hz, t, stop, lp);
      if (patch === "upright" || patch === "fingerbass") this.osc("sine", hz / 2, t, stop, lp);
    }
  }

  /** A drum hit of class index 0..8 (kick, snare, closed hat, open hat, low/mid/high tom, crash, ride). */
  drum(cls, t, volume = 0.8) {
    const ctx = this.ctx;
    const out = ctx.createGain();
    out.connect(this.master);
    const v = 0.5 * volume;
    this.heard(-1 - cls, volume);
    const noise = (dur, type, hz, q = 1) => {
      const src = ctx.createBufferSource();
      src.buffer = this.noise;
      const f = ctx.createBiquadFilter(); f.type = type; f.frequency.value = hz; f.Q.value = q;
      src.connect(f).connect(out);
      src.start(t, Math.random() * 0.5);
      src.stop(t + dur);
    };
    const sweep = (from, to, dur) => {
      const o = ctx.createOscillator(); o.type = "sine";
      o.frequency.setValueAtTime(from, t);
      o.frequency.exponentialRampToValueAtTime(to, t + dur);
      o.connect(out); o.start(t); o.stop(t + dur + 0.05);
    };
    const decay = (peak, tau, dur) => {
      out.gain.setValueAtTime(peak, t);
      out.gain.setTargetAtTime(0.0001, t + 0.002, tau);
      return dur;
    };
    switch (cls) {
      case 0: decay(v * 1.6, 0.12, 0.5); sweep(150, 45, 0.4); break;
      case 1: decay(v, 0.06, 0.25); noise(0.25, "bandpass", 1800, 0.7); sweep(220, 160, 0.1); break;
      case 2: decay(v * 0.45, 0.02, 0.08); noise(0.08, "highpass", 7500); break;
      case 3: decay(v * 0.45, 0.15, 0.5); noise(0.5, "highpass", 7000); break;
      case 4: decay(v, 0.15, 0.5); sweep(110, 70, 0.45); break;
      case 5: decay(v, 0.13, 0.45); sweep(160, 100, 0.4); break;
      case 6: decay(v, 0.11, 0.4); sweep(230, 150, 0.35); break;
      case 7: decay(v * 0.5, 0.5, 1.6); noise(1.6, "highpass", 4000); break;
      case 8: decay(v * 0.35, 0.25, 0.8); noise(0.8, "bandpass", 6500, 2); break;
      default: break;
    }
  }
}

/** Plays a piece (its notes) from a step, optionally looping a span, and reports the position. */
class Player {
  constructor(synth) {
    this.synth = synth;
    this.playing = false;
    this.timer = null;
  }

  /** notes: {instrument: [[start, end, pitch(, velocity)]]}; opts: {qpm, from, loop: [start, end] | null, steps,
   *  patches, drumPitches, onposition(step), onend()} (steps of time: a caller maps a grid with PAD to them) */
  play(notes, opts) {
    this.stop();
    const ctx = this.synth.start();
    this.opts = opts;
    this.notes = notes;
    this.secondsPerStep = 60 / opts.qpm / 4;
    this.span = opts.loop || [0, opts.steps];
    this.startStep = opts.loop ? opts.loop[0] : opts.from;
    this.t0 = ctx.currentTime + 0.08;  // audio time of startStep
    this.scheduledTo = this.startStep;   // song position (unwrapped steps) scheduled so far
    this.playing = true;
    this.tick();
    this.timer = setInterval(() => this.tick(), 25);
    const frame = () => {
      if (!this.playing) return;
      opts.onposition(this.position());
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  }

  /** The current step (wrapped into the loop). */
  position() {
    const elapsed = Math.max(0, (this.synth.ctx.currentTime - this.t0) / this.secondsPerStep);
    return this.wrap(this.startStep + elapsed);
  }

  wrap(step) {
    if (!this.opts.loop) return step;
    const [a, b] = this.span;
    return step < b ? step : a + ((step - a) % (b - a));
  }

  tick() {
    const ctx = this.synth.ctx;
    const horizon = (ctx.currentTime + 0.2 - this.t0) / this.secondsPerStep + this.startStep;
    const [a, b] = this.span;
    while (this.scheduledTo < horizon) {
      const from = this.scheduledTo;
      const to = Math.min(horizon, this.opts.loop ? from + (b - this.wrap(from)) : b);
      this.schedule(this.wrap(from), this.wrap(from) + (to - from), from);
      this.scheduledTo = to;
      if (!this.opts.loop && to >= b) {
        const endAt = (b - this.startStep) * this.secondsPerStep + this.t0;
        clearInterval(this.timer);
        this.timer = setTimeout(() => { this.stop(); this.opts.onend(); }, (endAt - ctx.currentTime) * 1000 + 300);
        return;
      }
      if (to === from) break;
    }
  }

  /** Start the notes with onsets in [s0, s1) (piece steps); songAt = the unwrapped position of s0. */
  schedule(s0, s1, songAt) {
    const t = (step) => this.t0 + (songAt + (step - s0) - this.startStep) * this.secondsPerStep;
    const loopEnd = this.opts.loop ? this.span[1] : this.opts.steps;
    for (const [track, list] of Object.entries(this.notes)) {
      const patch = this.opts.patches[track];
      for (const [start, end, pitch, velocity] of list) {
        if (start < s0 || start >= s1) continue;
        if (track === "drums") {
          const cls = this.opts.drumPitches.indexOf(pitch);
          if (cls >= 0) this.synth.drum(cls, t(start), velocityVolume(velocity));
        } else if (patch) {
          this.synth.note(patch, pitch, t(start), t(Math.min(end, loopEnd)), velocityVolume(velocity));
        }
      }
    }
  }

  stop() {
    if (this.timer) { clearInterval(this.timer); clearTimeout(this.timer); }
    this.timer = null;
    if (this.playing && this.synth.ctx) {
      // silence what was scheduled: swap the master bus
      const old = this.synth.master;
      old.gain.setTargetAtTime(0.0001, this.synth.ctx.currentTime, 0.02);
      setTimeout(() => old.disconnect(), 200);
      const bus = this.synth.ctx.createGain();
      bus.gain.value = 0.5;
      const comp = this.synth.ctx.createDynamicsCompressor();
      bus.connect(comp).connect(this.synth.ctx.destination);
      this.synth.master = bus;
    }
    this.playing = false;
  }
}

window.Synth = Synth;
window.Player = Player;
window.MELODY_INSTRUMENTS = MELODY_INSTRUMENTS;
window.BASS_INSTRUMENTS = BASS_INSTRUMENTS;
window.patchFor = patchFor;
