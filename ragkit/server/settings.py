"""Server configuration: one validated object, so a typo in a limit fails at start-up."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` only accepts connections from this machine.

    Anything that is not provably loopback (a hostname, ``0.0.0.0``, ``::``) counts as exposed:
    the cautious answer is the one that asks for an API key.
    """
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class ServerSettings(BaseModel):
    """Limits, security and batching knobs of the HTTP server.

    The defaults suit one user on a laptop; every limit exists so that a misbehaving client gets
    a clear 4xx/503 instead of exhausting the machine.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Interface the server binds to.")
    port: int = Field(8000, ge=0, le=65535)
    api_keys: tuple[SecretStr, ...] = Field(
        (), description="Accepted bearer tokens; required when host is not loopback."
    )
    model_id: str = Field("ragkit", description="Model name reported by the OpenAI-style API.")

    max_question_chars: int = Field(4000, ge=1, description="Longest accepted question.")
    max_tokens: int = Field(512, ge=1, description="Largest max_tokens a request may ask for.")
    default_max_tokens: int | None = Field(
        None, ge=1, description="max_tokens when a request gives none; None: the pipeline's."
    )
    max_body_bytes: int = Field(64 * 1024, ge=256, description="Largest accepted request body.")
    max_k: int = Field(50, ge=1, description="Most passages a search or query may ask for.")
    rate_limit_per_minute: int | None = Field(
        120, ge=1, description="Requests per minute per API key (or client address); None: off."
    )
    rate_limit_loopback: bool = Field(
        False,
        description="Without API keys, also limit clients connecting from a loopback address "
        "(all of them share one bucket); False: local clients are not rate-limited.",
    )
    rate_limit_burst: int | None = Field(
        None, ge=1, description="Bucket size; None: one minute's worth (rate_limit_per_minute)."
    )

    batch_wait_ms: float = Field(
        10.0, ge=0.0, description="How long the batcher waits for more requests to join a batch."
    )
    max_batch_size: int = Field(16, ge=1, description="Most questions sent to ask_batch at once.")
    max_queue: int = Field(64, ge=1, description="Waiting questions before 503 + Retry-After.")
    batching: bool = Field(True, description="False: one question per generation call.")
    max_streams: int = Field(4, ge=1, description="Concurrent streamed answers before 503.")
    retry_after_s: int = Field(2, ge=1, description="Retry-After sent with a 503.")

    cors_origins: tuple[str, ...] = Field(
        (), description="Origins allowed by CORS; empty (default): CORS is off."
    )
    feedback_db: Path | None = Field(
        None, description="SQLite feedback store; None: answers are not recorded."
    )
    serve_page: bool = Field(True, description="Serve the chat page at /.")

    @model_validator(mode="after")
    def _key_when_exposed(self) -> ServerSettings:
        if not is_loopback(self.host) and not self.api_keys:
            raise ValueError(
                f"binding to {self.host!r} (not loopback) requires an API key: "
                "pass --api-key-file or set RAGKIT_API_KEY"
            )
        if any(not key.get_secret_value().strip() for key in self.api_keys):
            raise ValueError("API keys must not be empty")
        if self.default_max_tokens is not None and self.default_max_tokens > self.max_tokens:
            raise ValueError("default_max_tokens exceeds max_tokens")
        return self

    @property
    def auth_required(self) -> bool:
        return bool(self.api_keys)
