"""Raw MIDI (a folder or the Lakh ``.tar.gz``) -> fixed-length token windows for training (spec section 2).

``python -m preprocessing --tracks trio --input PATH --output DIR`` writes ``DIR/train.npy``,
``DIR/valid.npy`` (uint16 ``(N, steps, K)``) and ``DIR/meta.json``;
:func:`load_meta` reads the latter back, validated.
"""

from preprocessing.config import PreprocessConfig
from preprocessing.extract import extract, process_file
from preprocessing.meta import load_meta, load_split
from preprocessing.pipeline import run, summary_table

__all__ = ["PreprocessConfig", "extract", "load_meta", "load_split", "process_file", "run", "summary_table"]
