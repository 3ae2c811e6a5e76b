"""The config as ``GET /admin/config`` shows it: secrets are only ever named by environment variable, and every
URL in the file (the store DSN, base URLs) has its password, user-info secret and sensitive query parameters
(``password=``, ``api-key=``, ``token=``, ...) masked.

Usage: ``JSONResponse(redacted(loaded.config))``.
"""

from __future__ import annotations

from typing import Any

from collectors.redact import mask_url
from gateway.config import Config


def redacted(config: Config) -> dict[str, Any]:
    """The config as JSON-ready data for ``/admin/config``: env names only, and every URL (the store DSN, base
    URLs) with its password and sensitive query parameters masked."""
    return _masked(config.model_dump(mode="json"))


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return mask_url(value) if isinstance(value, str) and "://" in value else value
