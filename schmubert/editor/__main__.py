"""``python -m schmubert.editor``: start the piano-roll editor (see :mod:`schmubert.editor`)."""

import sys

from schmubert.editor.server import main

if __name__ == "__main__":
    sys.exit(main())
