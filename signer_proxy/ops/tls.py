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
    """The listener's SSL context; `reload_if_changed` loads a new certificate into it, so
    new connections get the new certificate and open ones keep theirs."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str = "") -> None:
        self.cert_file, self.key_file, self.client_ca_file = cert_file, key_file, client_ca_file
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            self.context.load_cert_chain(cert_file, key_file)
            if client_ca_file:
                self.context.load_verify_locations(cafile=client_ca_file)
                # Optional: clients without a certificate may still authenticate by API key.
                self.context.verify_mode = ssl.CERT_OPTIONAL
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"TLS files cannot be used ({exc}): check --tls-cert-file, --tls-key-file and "
                "--tls-client-ca-file (PEM, key matching the certificate)"
            ) from None
        self._state = self._files_state()
        self.reloads = 0

    def _files_state(self) -> tuple[tuple[int, int, int] | None, ...]:
        return (_file_state(self.cert_file), _file_state(self.key_file))

    def reload_if_changed(self) -> bool:
        """Load the certificate and key again if either file changed; whether it did. A pair
        that does not load (half-written, key not matching yet) keeps the old one in use."""
        state = self._files_state()
        if state == self._state:
            return False
        try:
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            log.warning(
                "TLS certificate changed but cannot be loaded yet (%s); keeping the old", exc
            )
            return False
        self._state = state
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert_file)
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
