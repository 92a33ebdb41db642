"""API keys: where they come from and how a request's bearer token is checked.

Keys are compared with :func:`hmac.compare_digest` against every configured key (no early exit on
the first match), so response timing says nothing about how much of a guess was right. Keys are
held as :class:`pydantic.SecretStr` and never appear in logs, errors or reprs; rate limiting
identifies a caller by a short hash of its key, never by the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from pydantic import SecretStr

from ragkit.errors import RagkitError

API_KEY_ENV = "RAGKIT_API_KEY"


def load_api_keys(
    path: str | os.PathLike[str] | None = None, env: str = API_KEY_ENV
) -> tuple[SecretStr, ...]:
    """Keys from a file (one per line, ``#`` comments and blank lines skipped) and/or ``$env``."""
    keys: list[str] = []
    if path is not None:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise RagkitError(f"cannot read API key file {file}: {exc.strerror or exc}") from None
        keys += [line.strip() for line in text.splitlines()]
        keys = [k for k in keys if k and not k.startswith("#")]
        if not keys:
            raise RagkitError(f"API key file {file} holds no key")
    value = os.environ.get(env, "").strip()
    if value:
        keys.append(value)
    return tuple(SecretStr(k) for k in dict.fromkeys(keys))


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_matches(token: str, keys: tuple[SecretStr, ...]) -> bool:
    """Constant-time membership test of ``token`` among ``keys``."""
    given = token.encode("utf-8")
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.get_secret_value().encode("utf-8"))
    return found


def caller_id(token: str | None, client: str | None) -> str:
    """A stable, non-secret name for a caller (rate-limit bucket): key hash or client address."""
    if token is not None:
        return "key:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]
    return f"addr:{client or 'unknown'}"
