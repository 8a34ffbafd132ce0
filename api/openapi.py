"""The OpenAPI document of the REST API, shipped as package data (`api/openapi.json`).

The JSON file is the source: it is written by hand, served byte for byte by `GET /openapi.json`,
and `tests/api/test_openapi.py` holds it to the app's routes and the wire Structs.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any


@functools.cache
def openapi_bytes() -> bytes:
    """The document exactly as shipped (read once per process)."""
    return resources.files("api").joinpath("openapi.json").read_bytes()


def openapi_document() -> dict[str, Any]:
    """The document parsed; a fresh copy on each call, so callers may change it."""
    document: dict[str, Any] = json.loads(openapi_bytes())
    return document
