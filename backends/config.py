"""Checks shared by the ``backend:`` config sections of the real backends."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backends.local.router import RouterLimits


def integer(cfg: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    """``backend.<key>``, an integer in ``lo..hi``."""
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"backend.{key}: must be an integer {lo}..{hi} (got {value!r})")
    return value


def boolean(cfg: Mapping[str, Any], key: str) -> bool:
    """``backend.<key>``, true or false (false when absent)."""
    value = cfg.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"backend.{key}: must be true or false (got {value!r})")
    return value


def positive(cfg: Mapping[str, Any], key: str) -> float:
    """``backend.<key>``, a number > 0."""
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"backend.{key}: must be a number > 0 (got {value!r})")
    return float(value)


def text(cfg: Mapping[str, Any], key: str) -> str:
    """``backend.<key>``, a non-empty string."""
    value = cfg.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"backend.{key}: must be a non-empty string (got {value!r})")
    return value


def ports(cfg: Mapping[str, Any]) -> tuple[int, int]:
    """``backend.port`` (the router) and ``backend.admin_port``, which must differ."""
    port, admin_port = integer(cfg, "port", 1, 65535), integer(cfg, "admin_port", 1, 65535)
    if port == admin_port:
        raise ValueError("backend.admin_port: must differ from backend.port")
    return port, admin_port


def template(cfg: Mapping[str, Any]) -> str:
    """``backend.template``: what experiment actors run."""
    value = cfg.get("template")
    if value not in ("counter", "agent"):
        raise ValueError(f"backend.template: unknown {value!r}; allowed: counter, agent")
    return str(value)


def router_limits(cfg: Mapping[str, Any]) -> RouterLimits:
    """The router's limits on clients, from the section."""
    return RouterLimits(
        header_timeout_s=positive(cfg, "header_timeout_s"),
        body_timeout_s=positive(cfg, "body_timeout_s"),
        idle_timeout_s=positive(cfg, "idle_timeout_s"),
        max_connections=integer(cfg, "max_connections", 1, 1 << 20),
        max_header_bytes=integer(cfg, "max_header_bytes", 1024, 1 << 20),
        max_body_bytes=integer(cfg, "max_body_bytes", 1, 1 << 30),
    )


def duration(cfg: Mapping[str, Any]) -> float | None:
    """``backend.duration_s``: real seconds of load in experiments (None: the experiment's)."""
    return None if cfg.get("duration_s") is None else positive(cfg, "duration_s")


MIN_TOKEN_CHARS = 16


def read_token(path: Path, field: str) -> str:
    """The bearer token in ``path`` (stripped); ``ValueError`` naming ``field`` if it
    cannot be read or is shorter than :data:`MIN_TOKEN_CHARS` characters."""
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise ValueError(f"{field}: {e}") from None
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{field}: {path} holds fewer than {MIN_TOKEN_CHARS} characters")
    return token
