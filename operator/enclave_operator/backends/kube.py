"""Calls to the Kubernetes API through lightkube, with errors mapped to backend errors."""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Awaitable
from typing import TypeVar

import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.config.client_adapter import verify_cluster

from enclave_operator.backends import throttle
from enclave_operator.backends.errors import BackendError, BackendRejected, BackendUnavailable

T = TypeVar("T")
FIELD_MANAGER = "enclave-operator"
TIMEOUT_S = 15.0
"""Bound of one Kubernetes API call (not watches, which kopf runs itself)."""


class NotFound(BackendError):
    """The object does not exist (HTTP 404)."""


class Conflict(BackendUnavailable):
    """The object already exists, or changed under us (HTTP 409): observe again."""


async def call(what: str, awaitable: Awaitable[T]) -> T:
    """Await one API call (within the process-wide rate of Kubernetes calls, `throttle`); turn transport failures
    and API errors into BackendErrors naming `what`."""
    try:
        await throttle.bound("kubernetes").wait()
        return await awaitable
    except ApiError as error:
        code = error.status.code or 0
        text = f"{what}: {error.status.reason or 'error'} ({code}): {error.status.message or ''}".rstrip(": ")
        if code == 404:
            raise NotFound(text) from None
        if code == 409:
            raise Conflict(text) from None
        if code in (400, 403, 422):
            raise BackendRejected(text) from None
        if code == 429 or code >= 500:
            raise BackendUnavailable(text) from None
        raise BackendError(text) from None
    except (httpx2.TransportError, OSError) as error:
        raise BackendUnavailable(f"{what}: Kubernetes API unreachable ({type(error).__name__})") from None


def client(config: KubeConfig | None = None, *, timeout: float = TIMEOUT_S, connections: int) -> AsyncClient:
    """The operator's Kubernetes client (`config`: kubeconfig or the pod's service account, as lightkube reads them),
    with at most `connections` connections to the API server, all kept open.

    Not lightkube's default pool (httpx: up to 100 connections, 20 kept idle): before each request is sent and after
    each ends, httpx's pool checks every idle connection for a close by the server (a poll and a getpeername each, in
    the event loop's thread), so the more connections, the more each request costs; and a burst of more than 20
    closed the surplus, to be opened again with a TLS handshake on both sides (docs/performance.md, ninth round).
    A request waits for a free connection as long as it takes (no pool timeout): the reconcile slots bound how many
    wait, each request has its own connect, read and write timeouts, and a slow API server should make reconciles
    slower, not fail them as "unreachable"."""
    single = (config or KubeConfig.from_env()).get()
    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    transport = httpx2.AsyncHTTPTransport(verify=verify_cluster(single.cluster, single.user, single.abs_file),
                                          limits=limits, proxy=proxy_for(single.cluster.server))  # fmt: skip
    return AsyncClient(config=single, timeout=httpx2.Timeout(timeout, pool=None), field_manager=FIELD_MANAGER,
                       transport=transport)  # fmt: skip


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY / HTTP_PROXY, unless NO_PROXY covers its host), as
    lightkube's default client took it: httpx reads the environment only for the transports it makes itself."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme or "https")
