"""Proxies: both API transports and the opt-in media download go through a real forward proxy.

The proxy (``tests/forward_proxy.py``) is a real HTTP forward proxy on loopback that counts what it
forwarded; the emulator behind it is the real one. Every test clears the proxy variables first, so
a developer's or CI's own ``HTTP_PROXY``/``NO_PROXY`` cannot change the outcome, and sets exactly
the ones it is about.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_segmind.exceptions import SegmindError, SegmindOutputRefusedError, SegmindTransportError
from airflow_provider_segmind.hooks import _cache as hook_module
from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from airflow_provider_segmind.transfers._download import Downloader
from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger
from airflow_provider_segmind.utils.media_policy import DownloadPolicy
from airflow_provider_segmind.utils.proxy import normalize_proxy_url, public_proxy_url
from tests.forward_proxy import ForwardProxy, started
from tests.support.jobs import FAST_SCHEDULE, PROMPT, run_trigger

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
PROXY_PASSWORD = "pr0xy-s3cret-pw"


@pytest.fixture(autouse=True)
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    running = started()
    yield running
    running.stop()


@pytest.fixture
def auth_proxy() -> Iterator[ForwardProxy]:
    running = started(credentials=("airflow", PROXY_PASSWORD))
    yield running
    running.stop()


def connect(monkeypatch: pytest.MonkeyPatch, emu: Any, *, proxy: str | None = None, **extras: Any) -> None:
    extra = {"proxy": proxy, **extras} if proxy else extras
    conn = {"conn_type": "segmind", "password": emu.api_key, "host": emu.base_url, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))


def api_calls(proxy: ForwardProxy, path: str) -> int:
    return proxy.count(lambda f: f.path.startswith(path))


def sync_round(emu: Any) -> str:
    """Submit, poll to the end and read credits on the worker path; returns the request id."""
    hook = SegmindHook()
    try:
        request_id = hook.submit(SD3_LARGE_MODEL, {"prompt": PROMPT}).request_id
        deadline = time.monotonic() + 20
        while hook.get_status(request_id).status.value not in ("COMPLETED", "FAILED"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        hook.get_result(request_id)
        hook.get_credits()
    finally:
        hook.close()
    return request_id


def trigger_round(emu: Any) -> dict[str, Any]:
    """A submit (direct), then a whole trigger watch on a fresh loop: the triggerer path."""
    request_id = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": PROMPT}).request_id
    trigger = SegmindJobTrigger(
        request_id=request_id, model=SD3_LARGE_MODEL, submitted_at=time.time(), poll_schedule=FAST_SCHEDULE
    )
    (event,) = run_trigger(trigger)
    payload: dict[str, Any] = event.payload
    return payload


# ------------------------------------------------------------------ the proxy URL itself


def test_proxy_urls_are_checked_and_never_shown_with_their_password() -> None:
    assert normalize_proxy_url("proxy.corp:3128") == "http://proxy.corp:3128"
    assert normalize_proxy_url("  ") is None
    for bad in ("socks5://proxy:1080", "http://proxy:3128/path", "http://:3128", "http://proxy:99999"):
        with pytest.raises(ValueError, match="http://host:port") as info:
            normalize_proxy_url(bad)
        assert "SOCKS" in str(info.value)
    with pytest.raises(ValueError, match="not a proxy URL") as info:
        normalize_proxy_url(f"ftp://user:{PROXY_PASSWORD}@proxy:21")
    assert PROXY_PASSWORD not in str(info.value)
    assert public_proxy_url(f"http://user:{PROXY_PASSWORD}@proxy:3128") == "http://***@proxy:3128"


def test_a_bad_proxy_extra_fails_before_any_request(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    connect(monkeypatch, emulator, proxy=f"socks5://u:{PROXY_PASSWORD}@proxy:1080")
    with pytest.raises(Exception, match="extra 'proxy'") as info:
        SegmindHook().get_settings()
    assert PROXY_PASSWORD not in str(info.value)
    assert emulator.stats()["submit_attempts"] == 0


# ------------------------------------------------------------------ worker path (requests)


def test_worker_calls_honour_the_environment_proxy(emulator: Any, proxy: ForwardProxy, monkeypatch: Any) -> None:
    connect(monkeypatch, emulator)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    sync_round(emulator)
    assert proxy.count(lambda f: f.method == "POST" and f.path == f"/v2/{SD3_LARGE_MODEL}") == 1
    assert api_calls(proxy, "/v2/requests/") >= 2
    assert api_calls(proxy, "/v1/get-user-credits") == 1
    assert emulator.stats()["submissions"] == 1


def test_worker_calls_use_the_proxy_extra_with_its_credentials(
    emulator: Any, auth_proxy: ForwardProxy, monkeypatch: Any, caplog: Any
) -> None:
    connect(monkeypatch, emulator, proxy=auth_proxy.url)
    sync_round(emulator)
    assert auth_proxy.count(lambda f: f.method == "POST") == 1
    assert api_calls(auth_proxy, "/v2/requests/") >= 2
    assert auth_proxy.refused == 0
    settings = SegmindHook().get_settings()
    assert PROXY_PASSWORD not in repr(settings)
    assert settings.proxy_shown == public_proxy_url(auth_proxy.url)
    assert PROXY_PASSWORD not in caplog.text


def test_a_refused_proxy_login_is_an_error_without_the_password(
    emulator: Any, auth_proxy: ForwardProxy, monkeypatch: Any
) -> None:
    wrong = auth_proxy.url.replace(PROXY_PASSWORD, "wr0ng-pa55word")
    connect(monkeypatch, emulator, proxy=wrong)
    with pytest.raises(SegmindError, match="407") as info:
        SegmindHook().get_credits()
    assert "wr0ng-pa55word" not in str(info.value) + repr(info.value)
    assert auth_proxy.refused >= 1
    assert emulator.stats()["credit_checks"] == 0  # nothing reached the API


def test_no_proxy_bypasses_the_proxy_extra_and_the_environment(
    emulator: Any, proxy: ForwardProxy, monkeypatch: Any
) -> None:
    connect(monkeypatch, emulator, proxy=proxy.url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    sync_round(emulator)
    assert trigger_round(emulator)["status"] == "success"
    assert proxy.count() == 0
    assert emulator.stats()["submissions"] == 2


def test_an_unreachable_proxy_means_the_submit_was_not_sent(emulator: Any, monkeypatch: Any) -> None:
    dead = started()
    url = dead.url
    dead.stop()  # nothing listens there any more
    connect(monkeypatch, emulator, proxy=url, max_retries=1, retry_backoff=0.01)
    with pytest.raises(SegmindTransportError) as info:
        SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": PROMPT})
    assert info.value.request_sent is False  # so retrying it cannot bill twice
    assert "through the proxy" in str(info.value)
    assert emulator.stats()["submit_attempts"] == 0


# ------------------------------------------------------------------ triggerer path (aiohttp)


def test_trigger_polls_honour_the_environment_proxy(emulator: Any, proxy: ForwardProxy, monkeypatch: Any) -> None:
    connect(monkeypatch, emulator)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    event = trigger_round(emulator)
    assert event["status"] == "success"
    request_id = event["request_id"]
    assert api_calls(proxy, f"/v2/requests/{request_id}/status") >= 1
    assert proxy.count(lambda f: f.method == "GET" and f.path == f"/v2/requests/{request_id}") == 1
    assert hook_module._SHARED_SESSIONS.open_sessions() == 0


def test_trigger_polls_use_the_proxy_extra_with_its_credentials(
    emulator: Any, auth_proxy: ForwardProxy, monkeypatch: Any, caplog: Any
) -> None:
    connect(monkeypatch, emulator, proxy=auth_proxy.url)
    event = trigger_round(emulator)
    assert event["status"] == "success"
    assert api_calls(auth_proxy, f"/v2/requests/{event['request_id']}") >= 2
    assert auth_proxy.refused == 0
    assert PROXY_PASSWORD not in json.dumps(event) + caplog.text


def test_a_trigger_behind_a_refusing_proxy_ends_without_the_password(
    emulator: Any, auth_proxy: ForwardProxy, monkeypatch: Any
) -> None:
    connect(monkeypatch, emulator)
    request_id = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": PROMPT}).request_id
    connect(monkeypatch, emulator, proxy=auth_proxy.url.replace(PROXY_PASSWORD, "wr0ng-pa55word"))
    trigger = SegmindJobTrigger(
        request_id=request_id, model=SD3_LARGE_MODEL, poll_schedule=FAST_SCHEDULE, max_consecutive_errors=2
    )
    (event,) = run_trigger(trigger)
    assert event.payload["status"] == "error"
    assert "wr0ng-pa55word" not in json.dumps(event.payload)
    assert "407" in event.payload["message"], event.payload
    assert auth_proxy.refused == 1  # a proxy's login refusal is not retried
    assert emulator.stats()["status_polls"] == 0


# ------------------------------------------------------------------ media downloads (opt-in)


def media_url(emu: Any) -> str:
    request_id = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": PROMPT}).request_id
    deadline = time.monotonic() + 20
    while True:
        result = SegmindHook().get_status(request_id)
        if result.status.value == "COMPLETED":
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    url = SegmindHook().get_result(request_id).output_urls[0]
    assert url.startswith(emu.base_url)
    return url


def test_media_downloads_ignore_the_environment_proxy(emulator: Any, proxy: ForwardProxy, monkeypatch: Any) -> None:
    connect(monkeypatch, emulator)
    url = media_url(emulator)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    fetched = Downloader(DownloadPolicy(allow_insecure_loopback=True)).fetch(url)
    fetched.close()
    assert proxy.count() == 0


def test_opted_in_media_download_goes_through_the_proxy_without_the_key(
    emulator: Any, auth_proxy: ForwardProxy, monkeypatch: Any
) -> None:
    connect(monkeypatch, emulator)
    url = media_url(emulator)
    policy = DownloadPolicy(allow_insecure_loopback=True, proxy=auth_proxy.url)
    assert PROXY_PASSWORD not in repr(policy)
    fetched = Downloader(policy).fetch(url)
    try:
        assert fetched.size > 0
        assert fetched.content_type.startswith("image/")
    finally:
        fetched.close()
    through = [f for f in auth_proxy.forwarded if f.path.startswith("/media/")]
    assert len(through) == 1
    assert through[0].host == "127.0.0.1"  # the checked address, not a name for the proxy to resolve
    for entry in through:
        names = {name.lower() for name in entry.headers}
        assert "x-api-key" not in names
        assert "authorization" not in names
        assert emulator.api_key not in json.dumps(entry.headers)
    media = emulator.requests_log("/media/")
    assert media
    assert not any(entry["has_api_key"] for entry in media)


def test_opted_in_proxy_keeps_every_download_rule(emulator: Any, proxy: ForwardProxy) -> None:
    policy = DownloadPolicy(allow_insecure_loopback=True, proxy=proxy.url)
    for refused in (
        "http://images.segmind.com/x.png",  # plain http to a public host
        "https://169.254.169.254/latest/meta-data",  # not allow-listed (and a metadata address)
        "https://evil.example.com/x.png",  # not allow-listed
    ):
        with pytest.raises(SegmindOutputRefusedError):
            Downloader(policy).fetch(refused)
    strict = DownloadPolicy(allowed_hosts=("*",), proxy=proxy.url)
    with pytest.raises(SegmindOutputRefusedError, match="loopback"):
        Downloader(strict).fetch(f"https://127.0.0.1:{emulator.port}/media/x.png")  # a local address
    assert proxy.count() == 0  # refused before the proxy was ever asked


def test_no_proxy_bypasses_the_download_proxy(emulator: Any, proxy: ForwardProxy, monkeypatch: Any) -> None:
    connect(monkeypatch, emulator)
    url = media_url(emulator)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    Downloader(DownloadPolicy(allow_insecure_loopback=True, proxy=proxy.url)).fetch(url).close()
    assert proxy.count() == 0


def test_the_proxy_extra_is_a_text_field_of_the_connection_form() -> None:
    """3.2+ builds the form from ``conn-fields``; 3.1 from the hook's widgets: both offer ``proxy`` as text.
    (Airflow masks an extra named ``proxy`` as sensitive, like ``password``.)"""
    from airflow_provider_segmind.get_provider_info import get_provider_info

    (conn_type,) = get_provider_info()["connection-types"]
    schema = conn_type["conn-fields"]["proxy"]["schema"]
    assert schema == {"type": ["string", "null"]}
    widgets = SegmindHook.get_connection_form_widgets()
    if widgets:  # the 3.1 form's libraries are installed
        assert widgets["proxy"].field_class.__name__ == "StringField"


@pytest.fixture
def tls_media_host(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """An https media host on 127.0.0.1 with a self-signed certificate that this process trusts
    (``SSL_CERT_FILE``, read by Python's default TLS context): yields the URL of one PNG and the
    headers of every request it received."""
    import datetime
    import http.server
    import ipaddress
    import ssl
    import threading

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "segmind-test-media")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0f01f0005"
        "0001ff5ccc5d0d0000000049454e44ae426082"
    )
    seen: list[dict[str, str]] = []

    class Media(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers.items()))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Media)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/generations/out.png", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_opted_in_https_download_tunnels_to_the_checked_address(
    tls_media_host: tuple[str, list[dict[str, str]]], auth_proxy: ForwardProxy
) -> None:
    """https through the proxy: a CONNECT tunnel to the address checked here, TLS verified end to end."""
    url, seen = tls_media_host
    policy = DownloadPolicy(allow_insecure_loopback=True, proxy=auth_proxy.url)
    fetched = Downloader(policy).fetch(url)
    try:
        assert fetched.content_type == "image/png"
    finally:
        fetched.close()
    (tunnel,) = auth_proxy.forwarded
    assert tunnel.method == "CONNECT"
    assert tunnel.target == url.split("/")[2]  # 127.0.0.1:port: the checked address
    assert not {name.lower() for name in tunnel.headers} & {"x-api-key", "authorization"}
    assert len(seen) == 1
    for headers in seen:
        assert not {name.lower() for name in headers} & {"x-api-key", "authorization", "proxy-authorization"}


def test_trigger_reads_a_scheme_less_environment_proxy_like_requests(
    emulator: Any, proxy: ForwardProxy, monkeypatch: Any
) -> None:
    """``HTTP_PROXY=host:port`` (no scheme) works for requests; the triggerer must read it the same way."""
    connect(monkeypatch, emulator)
    monkeypatch.setenv("http_proxy", proxy.url.removeprefix("http://"))
    event = trigger_round(emulator)
    assert event["status"] == "success"
    assert api_calls(proxy, f"/v2/requests/{event['request_id']}") >= 2
