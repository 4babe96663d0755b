"""Version of the installed int4mm (written at build time when available)."""

try:  # written by setup.py into the built package
    from ._build_version import version as __version__  # type: ignore[import-not-found]
except ImportError:  # a source tree used in place
    __version__ = "0.1.0.dev0"
