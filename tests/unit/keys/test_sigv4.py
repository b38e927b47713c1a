"""keys/sigv4: the headers it signs are botocore SigV4Auth's, byte for byte, over a table of
endpoints, credentials, bodies and times (botocore's clock fixed to the same second)."""

from __future__ import annotations

import datetime
import timeit
from typing import Any

import pytest
from botocore.auth import SigV4Auth, _host_from_url
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from signer_proxy.keys import sigv4
from signer_proxy.keys.sigv4 import PostSigner, amz_date

HEADERS = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.Sign"}
BODY = (
    b'{"KeyId":"arn:aws:kms:us-east-1:111122223333:key/0a1b","Message":"q83vEjRWeJA=",'
    b'"MessageType":"DIGEST","SigningAlgorithm":"ECDSA_SHA_256"}'
)
NOON = datetime.datetime(2026, 12, 4, 12, 0, 0, tzinfo=datetime.UTC).timestamp()


def botocore_headers(
    url: str, region: str, body: bytes, credentials: Credentials, now: float, monkeypatch: Any
) -> dict[str, str]:
    fixed = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(tzinfo=None)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: fixed)
    request = AWSRequest("POST", url, data=body, headers={**HEADERS, "Host": _host_from_url(url)})
    SigV4Auth(credentials.get_frozen_credentials(), "kms", region).add_auth(request)
    return dict(request.headers.items())


@pytest.mark.parametrize(
    ("url", "region", "token", "body", "now"),
    [
        pytest.param("https://kms.us-east-1.amazonaws.com/", "us-east-1", None, BODY, NOON,
                     id="aws-long-term-keys"),
        pytest.param("https://kms.eu-west-3.amazonaws.com/", "eu-west-3",
                     "IQoJb3JpZ2luX2Vj//t0k3n==", BODY, NOON, id="temporary-credentials"),
        pytest.param("http://127.0.0.1:4566/", "us-east-1", None, BODY, NOON,
                     id="emulator-port"),
        pytest.param("https://kms-fips.us-gov-west-1.amazonaws.com:8443/", "us-gov-west-1",
                     "tok", BODY, NOON, id="non-default-port"),
        pytest.param("https://vpce-0a1b.kms.us-east-1.vpce.amazonaws.com/", "us-east-1", None,
                     '{"Message":"\u00e9\\u0000"}'.encode(), NOON + 0.999, id="unicode-body"),
        pytest.param("https://kms.us-east-1.amazonaws.com/", "us-east-1", None, BODY,
                     NOON + 12 * 3600 - 1, id="last-second-of-the-day"),
        pytest.param("https://kms.ap-south-1.amazonaws.com/", "ap-south-1", "a  b\tc", b"x",
                     0.0, id="epoch-and-spaces-in-token"),
    ],
)  # fmt: skip
def test_the_headers_are_botocores(
    url: str, region: str, token: str | None, body: bytes, now: float, monkeypatch: Any
) -> None:
    credentials = Credentials(
        "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", token
    )
    expected = botocore_headers(url, region, body, credentials, now, monkeypatch)
    signer = PostSigner(url, {**HEADERS, "Host": _host_from_url(url)}, region, "kms")
    assert signer.headers(body, credentials.access_key, credentials.secret_key, token, now) == (
        expected
    )


def test_the_days_key_is_derived_again_for_a_new_day_or_new_credentials(
    monkeypatch: Any,
) -> None:
    url = "https://kms.us-east-1.amazonaws.com/"
    signer = PostSigner(url, {**HEADERS, "Host": _host_from_url(url)}, "us-east-1", "kms")
    derived: list[str] = []
    real = sigv4.signing_key

    def counting(secret: str, date: str, region: str, service: str) -> bytes:
        derived.append(date)
        return real(secret, date, region, service)

    monkeypatch.setattr(sigv4, "signing_key", counting)
    first = Credentials("AKIDFIRST", "secret-one")
    rotated = Credentials("AKIDSECOND", "secret-two", "session")
    for credentials, now in [
        (first, NOON), (first, NOON + 60), (first, NOON + 86_400), (rotated, NOON + 86_401),
    ]:  # fmt: skip
        ours = signer.headers(BODY, credentials.access_key, credentials.secret_key,
                              credentials.token, now)  # fmt: skip
        assert ours == botocore_headers(url, "us-east-1", BODY, credentials, now, monkeypatch)
    assert derived == ["20261204", "20261205", "20261205"]  # once a day, and on rotation
    assert "secret" not in repr(signer)


def test_amz_date() -> None:
    assert amz_date(NOON) == "20261204T120000Z" and amz_date(0.5) == "19700101T000000Z"


def test_cheaper_than_botocores() -> None:
    """What it is for: a tenth of a signed send was botocore's SigV4 (docs/design.md)."""
    url = "https://kms.us-east-1.amazonaws.com/"
    credentials = Credentials("AKIDEXAMPLE", "secret", "token").get_frozen_credentials()
    signer = PostSigner(url, {**HEADERS, "Host": _host_from_url(url)}, "us-east-1", "kms")

    def sign() -> None:
        signer.headers(BODY, "AKIDEXAMPLE", "secret", "token", NOON)

    ours = min(timeit.repeat(sign, number=200, repeat=5))

    def botocore() -> None:
        request = AWSRequest("POST", url, data=BODY, headers={**HEADERS, "Host": "kms"})
        SigV4Auth(credentials, "kms", "us-east-1").add_auth(request)

    theirs = min(timeit.repeat(botocore, number=200, repeat=5))
    assert ours < theirs / 2
