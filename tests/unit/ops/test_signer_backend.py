"""keys/signer.signer_backend: each key class names its backend for metrics and the page."""

from __future__ import annotations

from signer_proxy.keys.aws_kms import KmsSigner
from signer_proxy.keys.local import LocalKeySigner
from signer_proxy.keys.pkcs11_keys import Pkcs11Signer
from signer_proxy.keys.signer import signer_backend
from signer_proxy.ops.status import backend_of


def test_each_key_class_names_its_backend() -> None:
    assert KmsSigner.backend == "aws_kms"
    assert Pkcs11Signer.backend == "pkcs11"
    local = LocalKeySigner(b"\x01" * 32)
    assert signer_backend(local) == "local"


def test_the_page_looks_through_wrappers() -> None:
    from signer_proxy.keys.signer import SignerWrapper

    class Kms(LocalKeySigner):
        backend = "aws_kms"

    wrapped = SignerWrapper(SignerWrapper(Kms(b"\x02" * 32)))
    assert backend_of(wrapped) == "aws_kms"
