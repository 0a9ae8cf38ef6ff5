"""MONAI Label's web app with one more error handler: form fields that are not JSON are a one-line HTTP 400.

MONAI Label's endpoints parse their ``params`` (infer, datastore) and ``info`` form fields with ``json.loads``
before any app code runs, so a field that is not JSON reached the client as a bare ``500 Internal Server Error``
and the log as a traceback. ``covseg label-server`` serves this module's ``app`` (uvicorn imports it after MONAI
Label's command has set its settings from the command line, as it would import ``monailabel.app``).
"""

from __future__ import annotations

import json
import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from monailabel.app import app

log = logging.getLogger(__name__)

__all__ = ["app"]


async def _not_json(request: Request, exc: Exception) -> JSONResponse:
    """400 naming the request and the parse error (``json.JSONDecodeError`` from an endpoint's form field)."""
    message = f"{request.method} {request.url.path}: a form field (params / info) is not valid JSON: {exc}"
    log.error("%s", message)
    return JSONResponse(status_code=400, content={"detail": message})


app.add_exception_handler(json.JSONDecodeError, _not_json)
