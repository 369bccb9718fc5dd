"""A TLS-terminating TCP proxy on loopback, so a benchmark can talk https to the (plain-http) emulator.

Segmind's API is https; on plain loopback HTTP a new connection costs a client almost nothing, while a
new https connection costs a TLS handshake. ``python -m benchmarks._tls_proxy --upstream-port P
--port-file F --cert C --key K`` accepts TLS on a free port and pipes each connection, one to one,
to ``127.0.0.1:P`` (so the emulator's connection count still equals the clients').
:func:`make_certificate` writes a self-signed certificate for 127.0.0.1/localhost (trust it with
``SSL_CERT_FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import os
import signal
import ssl
import sys
from pathlib import Path


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate (and key) valid for 127.0.0.1 and localhost; returns their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "segmind-bench-localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _serve(upstream_port: int, port_file: Path, cert: Path, key: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, up_writer), _pipe(up_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    tmp = port_file.with_name(port_file.name + ".tmp")
    tmp.write_text(str(port))
    os.replace(tmp, port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.upstream_port, args.port_file, args.cert, args.key))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
