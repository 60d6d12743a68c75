"""TLS for tmcd's HTTP listener: ``http.tls_cert`` and ``http.tls_key`` as a server SSL context,
with a one-line error naming the setting that is wrong (missing, unreadable, not PEM, or a key that
is not the certificate's)."""

from __future__ import annotations

import ssl

CERT_KEY = "http.tls_cert"
KEY_KEY = "http.tls_key"


class TlsFileError(ValueError):
    """``key`` (``http.tls_cert`` or ``http.tls_key``) names a file tmcd cannot serve TLS with;
    ``expected`` says what it must be, with the reason."""

    def __init__(self, key: str, path: str, expected: str) -> None:
        self.key, self.path, self.expected = key, path, expected
        super().__init__(f"{key} = {path!r}: expected {expected}")


def _no_passphrase() -> bytes:
    # OpenSSL would otherwise prompt on the terminal for an encrypted key (tmcd runs unattended)
    raise ValueError("encrypted private keys are not supported")


def _readable(key: str, path: str) -> None:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise TlsFileError(key, path, f"a readable PEM file ({exc.strerror or exc})") from None


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server-side SSL context (TLS 1.2 or newer) serving ``cert`` (a PEM certificate, then any
    intermediates) with its PEM private key ``key``; raises :class:`TlsFileError`."""
    _readable(CERT_KEY, cert)
    _readable(KEY_KEY, key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except (ssl.SSLError, ValueError) as exc:
        if not _is_certificate(cert):
            raise TlsFileError(CERT_KEY, cert, "a PEM certificate") from None
        if isinstance(exc, ssl.SSLError):
            mismatch = getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH"
            reason = "it is not the certificate's key" if mismatch else "no PEM private key found"
        else:
            reason = str(exc)
        raise TlsFileError(KEY_KEY, key, f"the unencrypted PEM private key of {CERT_KEY} ({reason})") from None
    return ctx


def _is_certificate(path: str) -> bool:
    """True when ``path`` holds at least one PEM certificate OpenSSL can parse."""
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError):
        return False
    return True
