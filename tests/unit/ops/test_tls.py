"""tls: the server context loads, reloads a changed certificate or client CA (and keeps the
old ones while the new files do not load), and an upstream CA file is used as given."""

from __future__ import annotations

import os
import shutil
import ssl
from pathlib import Path

import pytest

from signer_proxy.errors import ConfigError
from signer_proxy.ops.tls import ServerTls, upstream_ssl
from tests.auth_support import TestCa


def test_server_tls_loads_and_asks_for_optional_client_certificates(tmp_path: Path) -> None:
    ca = TestCa(tmp_path)
    server = ca.issue("localhost", server=True)

    plain = ServerTls(str(server.cert), str(server.key))
    mutual = ServerTls(str(server.cert), str(server.key), str(ca.path))

    assert plain.context.verify_mode == ssl.CERT_NONE
    assert mutual.context.verify_mode == ssl.CERT_OPTIONAL  # API key clients need no cert
    assert mutual.context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_server_tls_refuses_a_key_that_does_not_match(tmp_path: Path) -> None:
    ca = TestCa(tmp_path)
    one, two = ca.issue("a", server=True), ca.issue("b", server=True)
    with pytest.raises(ConfigError, match="--tls-cert-file, --tls-key-file"):
        ServerTls(str(one.cert), str(two.key))
    with pytest.raises(ConfigError):
        ServerTls(str(tmp_path / "missing.crt"), str(one.key))


def replace_file(source: Path, target: Path) -> None:
    """Replace like a Secret update or cert-manager does: a new file under the same name."""
    temporary = target.with_suffix(".tmp")
    shutil.copy(source, temporary)
    os.replace(temporary, target)


def test_reload_if_changed(tmp_path: Path) -> None:
    ca = TestCa(tmp_path)
    first, second = ca.issue("first", server=True), ca.issue("second", server=True)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    tls = ServerTls(str(cert), str(key))

    assert not tls.reload_if_changed()  # nothing changed
    replace_file(second.cert, cert)  # the certificate first, the key not yet
    assert not tls.reload_if_changed()  # the pair does not match: keep serving the old one
    replace_file(second.key, key)
    assert tls.reload_if_changed()
    assert tls.reloads == 1
    assert not tls.reload_if_changed()


def test_a_changed_client_ca_is_a_new_context_for_new_handshakes(tmp_path: Path) -> None:
    """A changed CA file builds a new context (the listener's own cannot forget a CA); one
    that does not load keeps the context in use. The handshakes themselves are tested over a
    real connection in tests/integration/test_auth_cli.py."""
    ca, other = TestCa(tmp_path), TestCa(tmp_path, "other CA")
    server = ca.issue("localhost", server=True)
    client_ca = tmp_path / "clients.pem"
    shutil.copy(ca.path, client_ca)
    tls = ServerTls(str(server.cert), str(server.key), str(client_ca))
    assert tls.current is tls.context and tls.context.sni_callback is not None

    client_ca.write_text("not a certificate")  # half-written
    assert not tls.reload_if_changed()
    assert tls.current is tls.context
    replace_file(other.path, client_ca)
    assert tls.reload_if_changed()
    assert tls.current is not tls.context
    assert tls.current.verify_mode == ssl.CERT_OPTIONAL
    trusted = {c["subject"] for c in tls.current.get_ca_certs()}
    assert trusted == {((("commonName", "other CA"),),)}


def test_upstream_ssl(tmp_path: Path) -> None:
    ca = TestCa(tmp_path)
    assert upstream_ssl("") is True  # the system's CAs
    context = upstream_ssl(str(ca.path))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match="--upstream-ca-file"):
        upstream_ssl(str(tmp_path / "missing.pem"))
