"""A failed request as an HTTP error whose body names the file and the reason in one line.

MONAI Label lets an exception of an infer task reach the web server, which answers ``500 Internal Server Error``
with no text and logs a traceback. The app turns them into :class:`fastapi.HTTPException` instead: the client
(3D Slicer shows the body) gets ``{"detail": "<what>: <file>: <reason>"}``, the server log the same line, and the
server goes on serving. Status: 404 unknown model or image, 422 an input that cannot be used
(:class:`~covseg.io.errors.CovsegInputError`), 400 a bad request setting (``ValueError``), 500 anything else (its
traceback is logged after the line).
"""

from __future__ import annotations

import logging

from fastapi import HTTPException

from covseg.io.errors import CovsegInputError

log = logging.getLogger(__name__)

__all__ = ["http_error", "request_failed"]


def http_error(status: int, message: str) -> HTTPException:
    """``HTTPException(status, message)``, the message logged as one error line."""
    log.error("%s", message)
    return HTTPException(status_code=status, detail=message)


def request_failed(what: str, exc: BaseException) -> HTTPException:
    """The HTTP error for ``exc`` raised while serving ``what`` (e.g. ``"infer covseg_lungs"``)."""
    if isinstance(exc, HTTPException):
        return exc
    if isinstance(exc, CovsegInputError):
        return http_error(422, f"{what}: {exc}")
    if isinstance(exc, (ValueError, TypeError)):
        log.debug("%s", what, exc_info=exc)  # where it came from, for --verbose DEBUG
        return http_error(400, f"{what}: {' '.join(str(exc).split())}")
    log.error("%s: %s: %s", what, type(exc).__name__, exc, exc_info=exc)
    return HTTPException(status_code=500, detail=f"{what}: {type(exc).__name__}: {' '.join(str(exc).split())}")
