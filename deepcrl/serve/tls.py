"""TLS for `deepcrl serve` (HTTP, WebSocket and gRPC on the same PEM files) and for its clients.

Server side: `ServerTls` holds the three files of ``--tls-cert``, ``--tls-key`` and ``--tls-client-ca``; `check`
loads them into an `ssl.SSLContext` once, before anything listens, so a missing or unreadable file, a file that
is not PEM, an encrypted key or a key that does not match the certificate is one sentence naming the file
(uvicorn and gRPC would otherwise fail later, with a traceback or a password prompt). uvicorn then encrypts
HTTP and WebSocket (`uvicorn_options`: its ``ssl_*`` settings; it decrypts before the server's protocol sees a
byte, so `connection.py`'s raw-bytes refusals work unchanged), and gRPC gets ``grpc.ssl_server_credentials``
(`grpc_credentials`). With a client CA, both require a client certificate signed by it (mutual TLS).

Client side: `client_context` is the `ssl.SSLContext` of `PolicyClient`, `StreamClient` and the benchmark's load
generator: the system's trusted CAs, or a given CA bundle (a self-signed server), and optionally a client
certificate. Nothing here imports more than the standard library (the robot-side client uses it).
"""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

from deepcrl.errors import DeepcrlError


class _Encrypted(Exception):
    """Raised by the password callback: the key file is encrypted."""


def _no_password() -> bytes:
    raise _Encrypted


def _read(path: Path, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DeepcrlError(f"{flag} {path} does not exist.") from None
    except OSError as exc:
        raise DeepcrlError(f"cannot read {flag} {path} ({exc.strerror or exc}).") from None


def _check_certificates(path: Path, flag: str) -> None:
    """`path` holds at least one PEM certificate OpenSSL can parse."""
    if b"-----BEGIN CERTIFICATE-----" not in _read(path, flag):
        raise DeepcrlError(f"{flag} {path} is not a PEM certificate (no -----BEGIN CERTIFICATE----- block).")
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as exc:
        raise DeepcrlError(f"{flag} {path} holds a PEM block OpenSSL cannot read as a certificate "
                           f"({exc.reason or exc}).") from None


@dataclasses.dataclass(frozen=True)
class ServerTls:
    """The server's PEM files: its certificate (chain), its private key and, for mutual TLS, the CA that signs
    the clients' certificates."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def check(self) -> ssl.SSLContext:
        """Load the files as uvicorn will (one `DeepcrlError` sentence naming the bad file); the context."""
        _check_certificates(self.cert, "--tls-cert")
        key = _read(self.key, "--tls-key")
        if b"-----BEGIN" not in key or b"PRIVATE KEY-----" not in key:
            raise DeepcrlError(f"--tls-key {self.key} is not a PEM private key (no -----BEGIN ... PRIVATE KEY----- "
                               "block).")
        if self.client_ca is not None:
            _check_certificates(self.client_ca, "--tls-client-ca")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(self.cert, self.key, password=_no_password)
        except _Encrypted:
            raise DeepcrlError(f"--tls-key {self.key} is encrypted; give the server an unencrypted key (e.g. "
                               f"`openssl pkey -in {self.key} -out plain.pem`) and protect it by file "
                               "permissions.") from None
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise DeepcrlError(f"--tls-key {self.key} does not match the certificate --tls-cert "
                                   f"{self.cert}.") from None
            raise DeepcrlError(f"--tls-key {self.key} or --tls-cert {self.cert} cannot be loaded "
                               f"({exc.reason or exc}).") from None
        if self.client_ca is not None:
            ctx.load_verify_locations(cafile=str(self.client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def uvicorn_options(self) -> dict:
        """`uvicorn.Config` keyword arguments: HTTP and WebSocket over TLS (a client certificate required with a
        client CA)."""
        options = {"ssl_certfile": str(self.cert), "ssl_keyfile": str(self.key)}
        if self.client_ca is not None:
            options.update(ssl_ca_certs=str(self.client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
        return options

    def grpc_credentials(self):
        """``grpc.ssl_server_credentials`` on the same files (client authentication required with a client CA)."""
        import grpc

        client_ca = None if self.client_ca is None else _read(self.client_ca, "--tls-client-ca")
        return grpc.ssl_server_credentials(((_read(self.key, "--tls-key"), _read(self.cert, "--tls-cert")),),
                                           root_certificates=client_ca, require_client_auth=client_ca is not None)


def server_tls(cert: Path | None, key: Path | None, client_ca: Path | None = None) -> ServerTls | None:
    """The `ServerTls` of the three flags (None without TLS); both of cert and key or neither."""
    if (cert is None) != (key is None):
        raise DeepcrlError("--tls-cert and --tls-key go together: give both (or neither, for plain HTTP).")
    if cert is None:
        if client_ca is not None:
            raise DeepcrlError("--tls-client-ca needs --tls-cert and --tls-key (client certificates are checked "
                               "only over TLS).")
        return None
    return ServerTls(Path(cert), Path(key), None if client_ca is None else Path(client_ca))


def client_context(ca: str | Path | None = None, cert: str | Path | None = None,
                   key: str | Path | None = None) -> ssl.SSLContext:
    """A client's TLS context: verifies the server against `ca` (a PEM bundle; None: the system's trusted CAs)
    and its host name, and presents the client certificate `cert` (with its `key`, when not in `cert`)."""
    if key is not None and cert is None:
        raise DeepcrlError("a client key needs its client certificate (cert= / --tls-client-cert).")
    if ca is not None:
        _check_certificates(Path(ca), "the CA bundle")
    ctx = ssl.create_default_context(cafile=None if ca is None else str(ca))
    if cert is not None:
        _read(Path(cert), "the client certificate")
        if key is not None:
            _read(Path(key), "the client key")
        try:
            ctx.load_cert_chain(cert, key, password=_no_password)
        except _Encrypted:
            raise DeepcrlError(f"the client key {key or cert} is encrypted; give an unencrypted one.") from None
        except ssl.SSLError as exc:
            raise DeepcrlError(f"the client certificate {cert} and key {key or cert} cannot be loaded "
                               f"({exc.reason or exc}).") from None
    return ctx
