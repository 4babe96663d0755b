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


_CUDA_ERROR_INSUFFICIENT_DRIVER = 35


def _with_hint(message: str, kind: str) -> str:
    """The C layer's message plus one sentence naming the int4mm variant that
    fits (int4mm._info.error_hint); never fails."""
    try:
        from ._info import error_hint

        hint = error_hint(kind, message)
    except Exception:  # noqa: BLE001 - a hint must never hide the real error
        hint = None
    return f"{message.rstrip('. ')}. {hint}" if hint else message


class NoDeviceError(CUDAError):
    """No usable NVIDIA driver or GPU is present."""

    def __init__(self, message: str, code: int = 0, name: str = ""):
        if code == _CUDA_ERROR_INSUFFICIENT_DRIVER:  # driver too old for this variant
            message = _with_hint(message, "driver")
        super().__init__(message, code, name)


class UnsupportedDeviceError(Int4mmError, RuntimeError):
    """The GPU is visible but this build of int4mm has no code for it."""

    def __init__(self, message: str = ""):
        if "compute capability" in message:  # from the first GPU call: say which wheel fits
            message = _with_hint(message, "arch")
        super().__init__(message)
