"""CiaoSR as a BasicSR plugin: importing it registers the archs, datasets and models.

Public API: `load_model`, `super_resolve`, `make_coord`, `make_cell`, the archs `CiaoSR` and `LIIF`, and
`CheckpointError` (what `load_model` raises for a file it cannot use).
"""
from importlib.metadata import PackageNotFoundError, version

from . import compat, data, models  # noqa: F401  (compat first: it must run before basicsr is imported)
from .archs import LIIF, CiaoSR
from .archs.coords import make_cell, make_coord
from .checkpoint import load_model
from .engine import super_resolve
from .errors import CheckpointError

__all__ = ['CiaoSR', 'LIIF', 'CheckpointError', 'load_model', 'make_cell', 'make_coord', 'super_resolve']
try:
    __version__ = version('ciaosr')  # the installed distribution's (pyproject.toml)
except PackageNotFoundError:  # run from a checkout that was never installed (inference/*.py put it on sys.path)
    __version__ = 'unknown'
