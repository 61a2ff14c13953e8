"""A browser piano-roll editor for SCHmUBERT models: ``python -m schmubert.editor [--checkpoint CKPT]``.

Upload a MIDI file (read as ``python -m schmubert.sample --input`` reads it for the model: its instruments chosen
by their notes or by the pickers, its bars, for a model built with meter in their own meters, its velocities),
start empty or from a validation piece; select bars x instruments, whole instruments or single notes; mask the
selection and let the diffusion fill it (steps, order, temperature, optional note density; progress bar,
cancel); regenerate, undo/redo; two panels with copy between them; transpose and shift; play it in the browser;
download the whole song (the sample CLI's splice), MIDI of the lanes, PNG.

Any model's track set: one lane per instrument, so a voice set's polyphonic instrument (pop909's piano, six
voices) is one lane, drawn in one colour with its chords, and selected whole. A velocity model's notes are
shaded and played by their velocity, and a take's new notes keep the velocities the model drew (in the lanes
and in the download). Bars of other meters (a meter model's PAD slots) are drawn at their real length.

Why this stack:

- **FastAPI on uvicorn** (server): small, well known, typed request bodies that double as the documented JSON
  API (``/openapi.json``) for DAW bridges and other clients; it serves a static page and JSON and stays out of
  the way. A widget framework such as NiceGUI (which the original used) drives the page from the server over a
  websocket, which costs a round trip for every mouse move of a drag; the piano roll wants the opposite.
- **A hand-written canvas page in plain JavaScript**, bundled in ``schmubert/editor/static`` (no build step, no
  CDN, no npm): a canvas redraws thousands of notes at every drag or zoom without a DOM node per note, and the
  page needs nothing from the internet. Playback is synthesized with the browser's WebAudio API (oscillators
  and filtered noise for the drums), so no soundfont is fetched from anywhere.

The server owns every music fact (tokens, masks, sampling, edits, MIDI): the page draws the notes the API
returns and sends back token grids; it never interprets tokens itself. Modules: :mod:`.pieces` (uploads, JSON,
masks, edits), :mod:`.jobs` (the model worker: one sampling run at a time, progress, cancel), :mod:`.server`
(the FastAPI app and the command line).
"""
