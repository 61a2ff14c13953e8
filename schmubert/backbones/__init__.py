"""Denoiser backbones behind one contract (see :mod:`schmubert.backbones.registry`).

Importing this package registers every architecture: ``transformer``, ``conv``, ``hierarchical``,
``utransformer``.
"""

from schmubert.backbones.registry import (
    PRESETS,
    Backbone,
    architectures,
    build,
    describe,
    from_config,
    make_config,
    register,
    spec,
)

# the architecture modules register themselves on import
from schmubert.backbones import conv, hierarchical, transformer, utransformer  # noqa: E402,F401  isort:skip

__all__ = ["PRESETS", "Backbone", "architectures", "build", "describe", "from_config", "make_config",
           "register", "spec"]
