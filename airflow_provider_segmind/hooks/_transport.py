"""How a failed call is named and retried, for both transports: ``requests``/``aiohttp`` failures
become typed :class:`SegmindTransportError`s (saying whether the request can have reached the
server), and one :class:`~airflow_provider_segmind.protocol.RetryPolicy` becomes ``tenacity``'s
arguments, so workers and the triggerer retry by the same rules.
"""

from __future__ import annotations

from typing import Any

import requests
import tenacity

from airflow_provider_segmind.exceptions import SegmindError, SegmindTransportError
from airflow_provider_segmind.protocol.errors import transport_error
from airflow_provider_segmind.protocol.retry import RetryPolicy
from airflow_provider_segmind.protocol.text import redact, sentences

#: Sent by both transports (the pooled ``requests`` session and the loop's ``aiohttp`` session).
USER_AGENT = "airflow-provider-segmind"


def retrying_kwargs(
    policy: RetryPolicy, *, idempotent: bool, what: str, log: Any, trust_5xx: bool = True
) -> dict[str, Any]:
    """The tenacity arguments both transports use, all derived from one :class:`RetryPolicy`."""

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return policy.delay(error, state.attempt_number) if error else 0.0

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "Segmind %s: attempt %d of %d failed (%s); retrying in %.1f s",
            what,
            state.attempt_number,
            policy.max_attempts,
            error,
            delay,
        )

    return {
        "retry": tenacity.retry_if_exception(
            lambda e: policy.is_retryable(e, idempotent=idempotent, trust_5xx=trust_5xx)
        ),
        "wait": wait,
        "stop": tenacity.stop_after_attempt(policy.max_attempts),
        "before_sleep": before_sleep,
        "reraise": True,
    }


def requests_error(err: requests.RequestException, url: str, secrets: list[str]) -> SegmindTransportError:
    """Classify a ``requests`` failure; ``request_sent=False`` only when the server cannot have seen it.

    ``secrets`` (the proxy's password) are removed from the detail.
    """
    if isinstance(err, requests.exceptions.ProxyError):
        # urllib3 raises it when the proxy cannot be reached or refuses the tunnel (e.g. 407):
        # before anything was forwarded to Segmind.
        return transport_error(
            "Could not connect through the proxy", request_sent=False, url=url, detail=redact(str(err), secrets)
        )
    if isinstance(err, requests.ConnectTimeout):
        return transport_error("Connect timeout", request_sent=False, url=url, detail=redact(str(err), secrets))
    if isinstance(err, requests.ReadTimeout):
        return transport_error("Read timeout", request_sent=True, url=url, detail=redact(str(err), secrets))
    if isinstance(err, requests.ConnectionError):
        text = repr(err)
        never_connected = any(
            marker in text
            for marker in ("NewConnectionError", "NameResolutionError", "Connection refused", "ConnectTimeout")
        )
        kind = "Could not connect" if never_connected else "Connection lost"
        return transport_error(kind, request_sent=not never_connected, url=url, detail=redact(str(err), secrets))
    return transport_error("HTTP error", request_sent=True, url=url, detail=redact(str(err), secrets))


def aiohttp_error(err: BaseException, url: str, secrets: list[str]) -> SegmindTransportError:
    """Classify an ``aiohttp`` failure like :func:`requests_error` does for ``requests``."""
    import aiohttp

    if isinstance(err, aiohttp.ClientHttpProxyError):
        # The proxy refused the tunnel (CONNECT answered e.g. 407 or 403): nothing reached Segmind.
        return transport_error(
            "Could not connect through the proxy",
            request_sent=False,
            url=url,
            detail=redact(f"the proxy answered HTTP {err.status} {err.message}", secrets),
        )
    if isinstance(err, aiohttp.ConnectionTimeoutError):
        return transport_error("Connect timeout", request_sent=False, url=url, detail=str(err) or "timed out")
    if isinstance(err, aiohttp.ClientConnectorError):
        return transport_error("Could not connect", request_sent=False, url=url, detail=redact(str(err), secrets))
    if isinstance(err, (aiohttp.ServerTimeoutError, TimeoutError)):
        return transport_error("Read timeout", request_sent=True, url=url, detail=str(err) or "timed out")
    return transport_error(
        "Connection lost", request_sent=True, url=url, detail=redact(f"{type(err).__name__}: {err}", secrets)
    )


def connection_test_failure(err: SegmindError, reached: str) -> str:
    """The connection test's text for an HTTP error: what came back and what to check, and nothing
    about retries or billing (the test makes one free call, and a person presses the button)."""
    code = err.status_code
    said = f": {err.error_text.strip().rstrip('.')}" if err.error_text else ""
    hints = {
        404: "This is not a Segmind API host: check the Host field (empty means https://api.segmind.com)",
        405: "This is not a Segmind API host: check the Host field (empty means https://api.segmind.com)",
        429: "The account is rate limited right now: test again in a minute",
    }
    hint = hints.get(
        code or 0, "Segmind (or a gateway in front of it) failed: test again later" if (code or 0) >= 500 else ""
    )
    return sentences(f"{reached} answered HTTP {code}{said}", hint)
