"""auth: API key hashes, the Authenticator's answers, the API keys file in both forms."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from signer_proxy.access.auth import (
    ANONYMOUS_IDENTITY,
    MIN_API_KEY_LENGTH,
    Authenticator,
    Credentials,
    Identity,
    cert_names,
    generate_api_key,
    hash_api_key,
    is_api_key_hash,
    load_api_keys,
)
from signer_proxy.errors import ConfigError, Unauthorized
from tests.auth_support import API_KEYS

KEY = API_KEYS["ci"]


def test_hash_api_key_is_salted_sha256_in_a_self_describing_form() -> None:
    salt = bytes(range(16))
    stored = hash_api_key(KEY, salt)

    assert stored == f"sha256${salt.hex()}${hashlib.sha256(salt + KEY.encode()).hexdigest()}"
    assert is_api_key_hash(stored)
    assert KEY not in stored


def test_hash_api_key_salts_every_hash_differently() -> None:
    assert hash_api_key(KEY) != hash_api_key(KEY)


def test_hash_api_key_refuses_a_key_too_short_to_be_random() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_API_KEY_LENGTH} characters"):
        hash_api_key("password123")


def test_generated_keys_are_long_random_and_hashable() -> None:
    keys = {generate_api_key() for _ in range(20)}

    assert len(keys) == 20
    for key in keys:
        assert key.startswith("spk_")
        assert len(key) >= MIN_API_KEY_LENGTH
        assert is_api_key_hash(hash_api_key(key))


def authenticator(**kwargs: object) -> Authenticator:
    api_keys = {client: [hash_api_key(key)] for client, key in API_KEYS.items()}
    api_keys["ci"].append(hash_api_key("spk_rotated-ci-key-0123456789abcdefghijk"))
    return Authenticator(
        api_keys, {"ci.example.com": "ci", "Reader Bot": "reader"}, required=True, **kwargs
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("credentials", "allow_query", "expected"),
    [
        pytest.param(Credentials(bearer=KEY), False, Identity("ci", "api_key"), id="bearer"),
        pytest.param(
            Credentials(bearer="spk_rotated-ci-key-0123456789abcdefghijk"),
            False,
            Identity("ci", "api_key"),
            id="second-key-of-a-client",
        ),
        pytest.param(
            Credentials(query_key=API_KEYS["dapp"]),
            True,
            Identity("dapp", "api_key_query"),
            id="query-allowed",
        ),
        pytest.param(
            Credentials(cert_names=("Reader Bot", "reader.example.com")),
            False,
            Identity("reader", "client_cert"),
            id="cert-by-cn",
        ),
        pytest.param(
            Credentials(cert_names=("unmapped", "ci.example.com")),
            False,
            Identity("ci", "client_cert"),
            id="cert-by-san",
        ),
        pytest.param(
            Credentials(bearer=API_KEYS["dapp"], cert_names=("ci.example.com",)),
            False,
            Identity("dapp", "api_key"),
            id="key-wins-over-cert",
        ),
    ],
)
def test_authenticate_maps_credentials_to_a_client(
    credentials: Credentials, allow_query: bool, expected: Identity
) -> None:
    assert authenticator(allow_query_key=allow_query).authenticate(credentials) == expected


@pytest.mark.parametrize(
    ("credentials", "allow_query", "fragment"),
    [
        pytest.param(Credentials(), False, "authentication required", id="nothing"),
        pytest.param(Credentials(), True, "(or ?key=<key>)", id="nothing-query-hint"),
        pytest.param(Credentials(bearer=KEY + "x"), False, "not valid", id="wrong-key"),
        pytest.param(Credentials(bearer=KEY[:-1]), False, "not valid", id="prefix-of-a-key"),
        pytest.param(Credentials(query_key=KEY), False, "not accepted", id="query-refused"),
        pytest.param(Credentials(query_key="nope"), True, "not valid", id="query-wrong"),
        pytest.param(
            Credentials(cert_names=("stranger",)), False, "stranger) is not mapped", id="cert"
        ),
    ],
)
def test_authenticate_refuses_with_what_to_send(
    credentials: Credentials, allow_query: bool, fragment: str
) -> None:
    with pytest.raises(Unauthorized, match=None) as raised:
        authenticator(allow_query_key=allow_query).authenticate(credentials)
    assert fragment in raised.value.message
    assert KEY not in raised.value.message


def test_authenticate_without_auth_configured_is_anonymous() -> None:
    open_door = Authenticator({}, required=False)
    assert open_door.authenticate(Credentials(bearer="anything")) == ANONYMOUS_IDENTITY


def test_required_with_no_clients_refuses_everyone() -> None:
    with pytest.raises(Unauthorized):
        Authenticator({}, required=True).authenticate(Credentials(bearer=KEY))


def test_authenticator_lists_its_clients() -> None:
    assert authenticator().clients == {"ci", "dapp", "reader"}


@pytest.mark.parametrize(
    ("peercert", "names"),
    [
        pytest.param(None, (), id="none"),
        pytest.param({}, (), id="unverified"),
        pytest.param(
            {
                "subject": ((("organizationName", "Ex"),), (("commonName", "ci"),)),
                "subjectAltName": (("DNS", "ci.example.com"), ("URI", "spiffe://x/ci")),
            },
            ("ci", "ci.example.com", "spiffe://x/ci"),
            id="cn-and-sans",
        ),
    ],
)
def test_cert_names(peercert: dict[str, object] | None, names: tuple[str, ...]) -> None:
    assert cert_names(peercert) == names


# --- the API keys file -------------------------------------------------------------------


def test_load_api_keys_from_a_yaml_file(tmp_path: Path) -> None:
    one, two, three = (hash_api_key(k) for k in API_KEYS.values())
    path = tmp_path / "keys.yaml"
    path.write_text(f"ci: '{one}'\ndapp: ['{two}', '{three}']\n")

    assert load_api_keys(str(path)) == {"ci": (one,), "dapp": (two, three)}


def test_load_api_keys_from_a_kubernetes_secret_directory(tmp_path: Path) -> None:
    one, two = hash_api_key(API_KEYS["ci"]), hash_api_key(API_KEYS["dapp"])
    # What a Secret volume looks like: a timestamped dir, ..data linking to it, and links.
    data = tmp_path / "..2025_01_01_00_00_00.000000000"
    data.mkdir()
    (data / "ci").write_text(one + "\n")
    (data / "dapp").write_text(f"# rotated on Monday\n{two}\n\n{one}\n")
    (tmp_path / "..data").symlink_to(data.name)
    for name in ("ci", "dapp"):
        (tmp_path / name).symlink_to(f"..data/{name}")

    assert load_api_keys(str(tmp_path)) == {"ci": (one,), "dapp": (two, one)}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("ci: " + API_KEYS["ci"], "is not a sha256$<salt>$<hash> hash", id="plain"),
        pytest.param("- a\n- b\n", "must map each client name", id="list"),
        pytest.param("ci: [1, 2]\n", "hashes must be strings", id="numbers"),
        pytest.param("'bad name!': x\n", "not a valid client name", id="client-name"),
        pytest.param("ci: [unclosed\n", "not valid YAML", id="yaml"),
    ],
)
def test_load_api_keys_refuses_bad_files_without_echoing_them(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_api_keys(str(path))
    assert fragment in str(raised.value)
    assert API_KEYS["ci"] not in str(raised.value)  # a key pasted by mistake is not printed


def test_load_api_keys_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_api_keys(str(tmp_path / "missing.yaml"))


def test_an_update_replaces_every_key_and_certificate_name() -> None:
    """A reload: the new set in, the old set out (a removed key is refused at once)."""
    door = authenticator()
    door.update({"dapp": [hash_api_key(API_KEYS["dapp"])]}, {"new.example.com": "dapp"})
    assert door.authenticate(Credentials(bearer=API_KEYS["dapp"])) == Identity("dapp", "api_key")
    assert door.authenticate(Credentials(cert_names=("new.example.com",))) == Identity(
        "dapp", "client_cert"
    )
    for gone in (Credentials(bearer=KEY), Credentials(cert_names=("Reader Bot",))):
        with pytest.raises(Unauthorized):
            door.authenticate(gone)
    assert door.clients == {"dapp"}
