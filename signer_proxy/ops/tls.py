"""TLS: the server's context (certificate re-read when its files change, optional client
certificates), and the context for an https:// upstream with a private CA."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl

from aiohttp import web

from signer_proxy.errors import ConfigError

log = logging.getLogger(__name__)


def _file_state(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)  # follows symlinks: a Kubernetes Secret update swaps one
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_ino, stat.st_size


class ServerTls:
    """The listener's SSL context. `reload_if_changed` builds a new context when the
    certificate, its key or the client CA file changed; the listener's context hands each new
    handshake to the newest one (its SNI callback, which OpenSSL calls for every ClientHello,
    with or without a server name), so new connections get the new certificate and trust the
    new CA, and open ones keep what they had."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str = "") -> None:
        self.cert_file, self.key_file, self.client_ca_file = cert_file, key_file, client_ca_file
        try:
            self.context = self._build()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"TLS files cannot be used ({exc}): check --tls-cert-file, --tls-key-file and "
                "--tls-client-ca-file (PEM, key matching the certificate)"
            ) from None
        self.current = self.context  # what new handshakes use
        self.context.sni_callback = self._hand_over
        self._state = self._files_state()
        self.reloads = 0

    def _build(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            context.load_verify_locations(cafile=self.client_ca_file)
            # Optional: clients without a certificate may still authenticate by API key.
            context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def _hand_over(self, connection: ssl.SSLObject, server_name: str | None, _: object) -> None:
        # OpenSSL switches the certificate, its key and the CA store it verifies against; the
        # verify mode stays the listener's, which every context here shares.
        if self.current is not self.context:
            connection.context = self.current

    def _files_state(self) -> tuple[tuple[int, int, int] | None, ...]:
        files = (self.cert_file, self.key_file, self.client_ca_file)
        return tuple(_file_state(path) if path else None for path in files)

    def reload_if_changed(self) -> bool:
        """Load the certificate, its key and the client CA again if any file changed; whether
        it did. Files that do not load (half-written, a key not matching yet, a CA file that is
        not PEM) keep the ones in use."""
        state = self._files_state()
        if state == self._state:
            return False
        try:
            context = self._build()
        except (OSError, ssl.SSLError) as exc:
            log.warning("TLS files changed but cannot be loaded yet (%s); keeping the old", exc)
            return False
        self.current = context
        self._state = state
        self.reloads += 1
        log.info(
            "TLS reloaded: certificate %s%s",
            self.cert_file,
            f", client CA {self.client_ca_file}" if self.client_ca_file else "",
        )
        return True

    async def watch(self, interval: float) -> None:
        """Check the files every `interval` seconds, forever (cancel to stop)."""
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()


SERVER_TLS = web.AppKey("server_tls", ServerTls)


def upstream_ssl(ca_file: str) -> ssl.SSLContext | bool:
    """How to verify an https:// upstream: the system's CAs (True), or only those in `ca_file`."""
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--upstream-ca-file {ca_file} cannot be used: {exc}") from None
