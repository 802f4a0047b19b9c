"""Fail fast when the Hugging Face Hub cannot be reached.

Without this, a model missing from the local cache on a machine with no route to the Hub costs about a minute of
the Hub client's "Retrying in 8s" lines before spurbench's one-line error. A short TCP probe of the endpoint
decides up front; when it fails, the Hub client runs in its offline mode for the call, which reads the local
cache and fails at once on a miss.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

#: seconds the probe waits for a TCP connection (a reachable Hub answers in well under one)
PROBE_TIMEOUT_S = 3.0


def hub_unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the Hub cannot be used now (HF_HUB_OFFLINE set, or its endpoint refuses or times out a connection),
    or None when it can."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return f"{host}:{port} is unreachable ({err.strerror or err.__class__.__name__})"
    return None


@contextmanager
def offline_unless_reachable() -> Iterator[str | None]:
    """Run the block with the Hub client in offline mode (cache only, no retries) when `hub_unreachable()` says
    so; yields that reason (None when the Hub is reachable and the block runs as usual)."""
    reason = hub_unreachable()
    if reason is None:
        yield None
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True  # read by the client at each request
    try:
        yield reason
    finally:
        constants.HF_HUB_OFFLINE = before
