"""Typed errors raised by int4mm.

Every error the library raises derives from :class:`Int4mmError` and also from
the built-in exception a caller would expect (``ValueError`` for bad values,
``TypeError`` for wrong types, ``RuntimeError`` for CUDA failures), so existing
``except ValueError`` code keeps working.
"""

from __future__ import annotations


class Int4mmError(Exception):
    """Base class of every error raised by int4mm."""


class Int4mmValueError(Int4mmError, ValueError):
    """An argument has the right type but a value int4mm cannot accept."""


class Int4mmTypeError(Int4mmError, TypeError):
    """An argument has the wrong type (not a CUDA array, wrong dtype, ...)."""


class BadDataError(Int4mmValueError):
    """The *contents* of an array are invalid (a code above 15, a sparse block
    that does not keep exactly 16 weights).  Detected on the GPU."""


class CUDAError(Int4mmError, RuntimeError):
    """A CUDA runtime call failed.  ``code`` and ``name`` carry the CUDA error."""

    def __init__(self, message: str, code: int = 0, name: str = ""):
        super().__init__(message)
        self.code = code
        self.name = name


class NoDeviceError(CUDAError):
    """No usable NVIDIA driver or GPU is present."""


class UnsupportedDeviceError(Int4mmError, RuntimeError):
    """The GPU is visible but this build of int4mm has no code for it."""
