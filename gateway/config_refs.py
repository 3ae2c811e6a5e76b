"""The error lines of a config file: the schema's (pydantic's, with key paths) and checks of the raw file run
beside them, so ``turnout check`` lists everything at once: names that must refer to an upstream or a route,
and ``*_env`` variables.

Usage: ``errors = reference_errors(data) + env_errors(data, os.environ)``; each line is ``key.path: message``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError


def reference_errors(data: dict[Any, Any]) -> list[str]:
    """Names that must refer to an upstream or a route, checked on the raw file (listed beside schema errors)."""
    upstreams = data.get("upstreams")
    routes = data.get("routes")
    if not isinstance(upstreams, dict) or not isinstance(routes, dict):
        return []
    known = {str(name) for name in upstreams}
    errors = []
    clients = (data.get("auth") or {}).get("clients") if isinstance(data.get("auth"), dict) else None
    for name, client in clients.items() if isinstance(clients, dict) else ():
        allowed = client.get("routes") if isinstance(client, dict) else None
        for i, route in enumerate(allowed if isinstance(allowed, list) else ()):
            if isinstance(route, str) and route not in routes:
                errors.append(f"auth.clients.{name}.routes.{i}: unknown route {route!r}")
    for name, route in routes.items():
        if not isinstance(route, dict):
            continue
        variants, fallbacks, shadows = route.get("variants"), route.get("fallbacks"), route.get("shadows")
        for variant in variants if isinstance(variants, dict) else ():
            if str(variant) not in known:
                errors.append(f"routes.{name}.variants: unknown upstream {variant!r}")
        for i, fallback in enumerate(fallbacks if isinstance(fallbacks, list) else ()):
            if isinstance(fallback, str) and fallback not in known:
                errors.append(f"routes.{name}.fallbacks.{i}: unknown upstream {fallback!r}")
        for i, shadow in enumerate(shadows if isinstance(shadows, list) else ()):
            upstream = shadow.get("upstream") if isinstance(shadow, dict) else None
            if isinstance(upstream, str) and upstream not in known:
                errors.append(f"routes.{name}.shadows.{i}.upstream: unknown upstream {upstream!r}")
    return errors


def env_errors(data: Any, environ: Mapping[str, str], path: str = "") -> list[str]:
    """Every ``*_env`` key of the file whose variable is unset or empty, with its key path."""
    errors = []
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if str(key).endswith("_env") and isinstance(value, str):
                if not environ.get(value):
                    errors.append(f"{where}: environment variable {value} is not set")
            else:
                errors.extend(env_errors(value, environ, where))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            errors.extend(env_errors(item, environ, f"{path}.{i}"))
    return errors


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-")) or "(top level)"


def schema_errors(exc: ValidationError) -> list[str]:
    """pydantic's errors as ``key.path: message`` lines."""
    lines = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{_loc(err['loc'])}: {message}")
    return lines
