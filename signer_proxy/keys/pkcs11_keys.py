"""PKCS#11 keys (AWS CloudHSM, YubiHSM 2, Thales Luna, Utimaco, SoftHSM2) behind the Signer seam.

A source is an RFC 7512 URI: `pkcs11:token=LABEL;object=KEY` (or `serial=…` for the token,
`id=%01` for the key; neither object nor id: every secp256k1 key of the token, optionally
`?x-label-prefix=P`), with `?module-path=SO` and `?pin-source=file:PATH` overriding
--pkcs11-module and --pkcs11-pin-file / --pkcs11-pin-env. The PIN is read when the token is
opened and never appears in a label, log line, error or metric.

Keys: CKO_PRIVATE_KEY of CKK_EC whose CKA_EC_PARAMS name secp256k1, with CKA_SIGN; the
public key comes from the CKO_PUBLIC_KEY of the same CKA_ID (else label). Signing is
CKM_ECDSA over the 32-byte digest: the token returns raw r‖s, made low-S and given its
recovery bit by trial against the public key, as for KMS.

python-pkcs11 calls block (they release the GIL): they run on worker threads with pooled
sessions, so the event loop never waits on the HSM. python-pkcs11 initialises a module
without CKF_OS_LOCKING_OK (C_Initialize(NULL)), which by the standard promises the module no
concurrent calls, so calls into one module are made one at a time. A session the
token no longer knows (device removed, token re-inserted, logged out, handles invalidated)
makes the pool drop every session, log in again (re-initialising the module when the token
cannot be found any more), find the key again and retry, with backoff, inside the request
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from signer_proxy.deadline import remaining
from signer_proxy.errors import ConfigError, HsmRefused, HsmUnavailable, KeyLoadFailed
from signer_proxy.eth.ecdsa import (
    ProvenSignature,
    SignatureError,
    address_from_public_key,
    raw_signature,
)
from signer_proxy.keys.aws_kms import backoff_delay
from signer_proxy.keys.backends import LoadContext, LoadedKey
from signer_proxy.keys.signer import BackendSigner

if TYPE_CHECKING:
    from signer_proxy.config import Settings
    from signer_proxy.keys.signer import Signer

log = logging.getLogger(__name__)
T = TypeVar("T")

SECP256K1_OID_DER = bytes.fromhex("06052b8104000a")  # 1.3.132.0.10
_PATH_ATTRIBUTES = ("token", "serial", "object", "id", "type", "manufacturer", "model")
_QUERY_ATTRIBUTES = ("module-path", "pin-source", "x-label-prefix")
SIGN_ATTEMPTS = 3
# C_Login's user types (--pkcs11-user-type): the standard CKU_USER, and Thales Luna's
# vendor-defined Crypto User (CKU_CRYPTO_USER = CKU_VENDOR_DEFINED | 1).
USER_TYPES = {"user": 1, "crypto-user": 0x80000001}

# A session or login the token no longer honours: drop the sessions, open and log in again.
_LOST = (
    "SessionHandleInvalid", "SessionClosed", "DeviceRemoved", "DeviceError", "TokenNotPresent",
    "TokenNotRecognised", "UserNotLoggedIn", "ObjectHandleInvalid", "KeyHandleInvalid",
    "GeneralError", "SlotIDInvalid", "NoSuchToken", "FunctionFailed", "DeviceMemory",
)  # fmt: skip
# The operator must act: a retry cannot help.
_ADVICE = {
    "PinIncorrect": "the PIN is wrong: fix the PIN file or variable (a few more wrong tries "
    "lock the user)",
    "PinLocked": "the user's PIN is locked: the security officer must unlock or reset it",
    "PinExpired": "the user's PIN has expired: set a new one",
    "PinLenRange": "the PIN has a length the token refuses: check the PIN file",
    "UserPinNotInitialized": "the token's user PIN is not set: initialise the token",
    "AnotherUserAlreadyLoggedIn": "another user (the security officer?) is logged in to the "
    "token in this process",
    "MechanismInvalid": "the token does not offer CKM_ECDSA for this key",
    "KeyFunctionNotPermitted": "the key's CKA_SIGN is false: it may not sign",
    "KeyTypeInconsistent": "the key is not an EC key",
    "FunctionNotSupported": "the module does not support this call",
    "NoSuchKey": "no such key on the token: check object= / id= in the URI",
}


def _user_type_invalid(exc: BaseException) -> bool:
    """CKR_USER_TYPE_INVALID, which python-pkcs11 raises as a bare PKCS11Error."""
    return type(exc).__name__ == "PKCS11Error" and "user type invalid" in str(exc).lower()


def ckr_name(exc: BaseException) -> str:
    """`TokenNotPresent` → `CKR_TOKEN_NOT_PRESENT`: the name operators find in vendor docs."""
    name = type(exc).__name__
    if _user_type_invalid(exc):
        return "CKR_USER_TYPE_INVALID"
    if name == "PKCS11Error":
        return "CKR_CRYPTOKI_NOT_INITIALIZED" if "not initiali" in str(exc) else "PKCS#11 error"
    if name in ("NoSuchKey", "NoSuchToken", "MultipleObjectsReturned", "MultipleTokensReturned"):
        return name
    return "CKR_" + re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()


def is_lost(exc: BaseException) -> bool:
    """A session, login or module state the token lost: reopening may get past it (a bare
    PKCS11Error is the module left uninitialised by a C_Initialize that failed)."""
    if _user_type_invalid(exc):
        return False
    return type(exc).__name__ in _LOST or type(exc).__name__ == "PKCS11Error"


# --- the URI ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pkcs11Spec:
    """One `pkcs11:` source, parsed; the PIN itself is only read when the token is opened."""

    label: str  # the URI as written (no PIN can be in it: pin-value is refused)
    module: str
    token: str = ""
    serial: str = ""
    object: str = ""
    id: bytes = b""
    label_prefix: str = ""
    pin_file: str = ""
    pin_env: str = ""
    sessions: int = 4
    user_type: int = USER_TYPES["user"]  # C_Login's (--pkcs11-user-type)

    @property
    def lists(self) -> bool:
        """No object and no id: every secp256k1 key of the token (with the label prefix)."""
        return not (self.object or self.id)

    @property
    def token_name(self) -> str:
        return f"token={self.token}" if self.token else f"serial={self.serial}"


def _attributes(text: str, separator: str, known: tuple[str, ...], part: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in filter(None, text.split(separator)):
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--key pkcs11:…: {part} attribute {item!r} must be NAME=VALUE")
        if name == "pin-value":
            raise ConfigError(
                "--key pkcs11:…: pin-value would put the PIN in the configuration; use "
                "?pin-source=file:PATH, --pkcs11-pin-file or --pkcs11-pin-env"
            )
        if name not in known:
            raise ConfigError(
                f"--key pkcs11:…: unknown {part} attribute {name!r}; known: {', '.join(known)}"
            )
        if name in found:
            raise ConfigError(f"--key pkcs11:…: {name} is given twice")
        found[name] = value
    return found


def parse_uri(text: str, settings: Settings | None = None) -> Pkcs11Spec:
    """An RFC 7512 `pkcs11:` URI as a Pkcs11Spec; ConfigError saying what to fix."""
    if not text.startswith("pkcs11:"):
        raise ConfigError(f"--key {text!r}: a PKCS#11 source starts with pkcs11:")
    path, _, query = text[len("pkcs11:") :].partition("?")
    attrs = _attributes(path, ";", _PATH_ATTRIBUTES, "path")
    options = _attributes(query, "&", _QUERY_ATTRIBUTES, "query")
    value = {k: unquote(v) for k, v in attrs.items()}
    if value.get("type", "private") != "private":
        raise ConfigError(f"--key {text}: type={value['type']}: only private keys sign")
    if not (value.get("token") or value.get("serial")):
        raise ConfigError(f"--key {text}: name the token: token=LABEL or serial=SERIAL")
    module = unquote(options.get("module-path", "")) or (settings.pkcs11_module if settings else "")
    if not module:
        raise ConfigError(
            f"--key {text}: no PKCS#11 module: set --pkcs11-module or ?module-path=/path/to/.so"
        )
    pin_source = unquote(options.get("pin-source", ""))
    if pin_source and not pin_source.startswith("file:"):
        raise ConfigError(f"--key {text}: pin-source must be file:PATH")
    pin_file = pin_source[len("file:") :] if pin_source else ""
    pin_file = pin_file or (settings.pkcs11_pin_file if settings else "")
    pin_env = "" if pin_file else (settings.pkcs11_pin_env if settings else "")
    if not (pin_file or pin_env):
        raise ConfigError(
            f"--key {text}: no PIN: set --pkcs11-pin-file, --pkcs11-pin-env or "
            "?pin-source=file:PATH"
        )
    user_type = settings.pkcs11_user_type if settings else "user"
    if user_type not in USER_TYPES:
        raise ConfigError(
            f"--pkcs11-user-type {user_type!r} must be user (CKU_USER) or crypto-user (Thales "
            "Luna's CKU_CRYPTO_USER)"
        )
    key_id = unquote_to_bytes(attrs.get("id", ""))
    return Pkcs11Spec(
        label=text,
        module=module,
        token=value.get("token", ""),
        serial=value.get("serial", ""),
        object=value.get("object", ""),
        id=key_id,
        label_prefix=unquote(options.get("x-label-prefix", "")),
        pin_file=pin_file,
        pin_env=pin_env,
        sessions=settings.pkcs11_sessions if settings else 4,
        user_type=USER_TYPES[user_type],
    )


def unquote_to_bytes(text: str) -> bytes:
    from urllib.parse import unquote_to_bytes as raw

    return raw(text)


def read_pin(spec: Pkcs11Spec) -> str:
    """The PIN, from its file (first line) or variable; KeyLoadFailed naming where, never it."""
    if spec.pin_file:
        try:
            with open(spec.pin_file, encoding="utf-8") as file:
                pin = file.readline().rstrip("\r\n")
        except OSError as exc:
            raise KeyLoadFailed(
                f"PKCS#11 {spec.token_name}: the PIN file {spec.pin_file} cannot be read "
                f"({exc.strerror})",
                "access_denied",
            ) from None
        where = f"the PIN file {spec.pin_file}"
    else:
        pin = os.environ.get(spec.pin_env, "")
        where = f"the variable {spec.pin_env}"
    if not pin:
        raise KeyLoadFailed(f"PKCS#11 {spec.token_name}: {where} is empty", "access_denied")
    return pin


# --- modules, tokens and their session pools ------------------------------------------------


class Module:
    """One loaded PKCS#11 module (C_Initialize once per process); `generation` counts
    re-initialisations, which invalidate every session opened before."""

    def __init__(self, path: str) -> None:
        import pkcs11

        self.path = path
        self.lib = pkcs11.lib(path)
        self.generation = 0
        self.lock = threading.Lock()
        # python-pkcs11 calls C_Initialize(NULL): by the standard that promises the module
        # no concurrent calls (no CKF_OS_LOCKING_OK), and SoftHSM2 then takes no locks and
        # corrupts its heap under concurrent signing. So one call at a time per module.
        self.calls = threading.Lock()

    def ensure(self) -> None:
        """C_Initialize again if a re-initialisation left the module uninitialised (SoftHSM2
        refuses to initialise while its token directory is gone)."""
        if not self.lib.initialized:
            with self.lock:
                if not self.lib.initialized:
                    self.lib.initialize()
                    self.generation += 1

    def reinitialize(self, seen: int) -> None:
        """C_Finalize + C_Initialize, once for everyone who saw generation `seen`."""
        with self.lock:
            if self.generation == seen:  # nobody did it meanwhile
                self.generation += 1
                with contextlib.suppress(Exception):
                    self.lib.finalize()
                self.lib.initialize()


_MODULES: dict[str, Module] = {}
_POOLS: dict[tuple[str, str, str, int], TokenPool] = {}
_REGISTRY_LOCK = threading.Lock()


def module(path: str) -> Module:
    with _REGISTRY_LOCK:
        found = _MODULES.get(path)
        if found is None:
            found = _MODULES[path] = Module(path)
        return found


@dataclass
class _Session:
    session: Any
    generation: tuple[int, int]
    keys: dict[tuple[str, bytes], Any] = field(default_factory=dict)


class TokenPool:
    """Sessions to one token, logged in once, used one per worker thread."""

    def __init__(self, spec: Pkcs11Spec) -> None:
        self.spec = spec
        self._executor = ThreadPoolExecutor(spec.sessions, thread_name_prefix="pkcs11")
        self._lock = threading.Lock()
        self._idle: list[_Session] = []
        self._login: Any = None
        self._epoch = 0  # bumped by each reset
        self.token_label = spec.token

    async def run(self, work: Callable[[_Session], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, work)

    def _call(self, work: Callable[[_Session], T]) -> T:
        mod = module(self.spec.module)
        with mod.calls:
            return self._call_serialised(mod, work)

    def _call_serialised(self, mod: Module, work: Callable[[_Session], T]) -> T:
        for attempt in range(2):
            held = self._take(mod)
            try:
                result = work(held)
            except Exception as exc:
                if is_lost(exc) and attempt == 0:
                    log.warning(
                        "PKCS#11 %s: %s; opening the token's sessions again",
                        self.spec.token_name, ckr_name(exc),
                    )  # fmt: skip
                    self.reset(mod, held.generation)
                    continue
                if is_lost(exc):
                    self.reset(mod, held.generation)
                raise
            self._give_back(mod, held)
            return result
        raise AssertionError("unreachable")

    def _take(self, mod: Module) -> _Session:
        with self._lock:
            while self._idle:
                held = self._idle.pop()
                if held.generation == (mod.generation, self._epoch):
                    return held
            return self._open(mod)

    def _give_back(self, mod: Module, held: _Session) -> None:
        with self._lock:
            if held.generation == (mod.generation, self._epoch):
                self._idle.append(held)

    def find_token(self, mod: Module | None = None) -> Any:
        """The token `spec` names, asking the module now (C_GetSlotList, C_GetTokenInfo):
        NoSuchToken or the module's error when it is not there."""
        import pkcs11

        lib = (mod or module(self.spec.module)).lib
        if self.spec.token:
            return lib.get_token(token_label=self.spec.token)
        for slot in lib.get_slots(token_present=True):
            token = slot.get_token()
            if token.serial.rstrip(b"\0 ") == self.spec.serial.encode():
                return token
        raise pkcs11.exceptions.NoSuchToken()

    def _token(self, mod: Module) -> Any:
        import pkcs11

        mod.ensure()
        try:
            return self.find_token(mod)
        except (pkcs11.exceptions.NoSuchToken, pkcs11.exceptions.GeneralError):
            mod.reinitialize(mod.generation)  # a module that lost sight of a token
            return self.find_token(mod)

    def _open(self, mod: Module) -> _Session:
        """A new session (the lock held); the first one logs the token in."""
        import pkcs11

        token = self._token(mod)
        self.token_label = token.label
        if self._login is None or self._login[1] != (mod.generation, self._epoch):
            pin = read_pin(self.spec)
            try:
                session = token.open(user_pin=pin, user_type=self.spec.user_type)
            except pkcs11.exceptions.UserAlreadyLoggedIn:
                session = token.open()
            finally:
                del pin
            self._login = (session, (mod.generation, self._epoch))
            return _Session(session, (mod.generation, self._epoch))
        return _Session(token.open(), (mod.generation, self._epoch))

    def reset(self, mod: Module, seen: tuple[int, int]) -> None:
        """Forget every session of the generation `seen` (one reset per loss, not per thread)."""
        with self._lock:
            if seen != (mod.generation, self._epoch):
                return
            self._epoch += 1
            for held in self._idle:
                _quietly_close(held.session)
            self._idle.clear()
            if self._login is not None:
                _quietly_close(self._login[0])
                self._login = None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _quietly_close(session: Any) -> None:
    with contextlib.suppress(Exception):  # a removed token's session is gone anyway
        session.close()


def token_pool(spec: Pkcs11Spec) -> TokenPool:
    """The process's pool for the token `spec` names (one login per token per process)."""
    key = (spec.module, spec.token, spec.serial, spec.user_type)
    with _REGISTRY_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = TokenPool(spec)
        return pool


# --- keys ---------------------------------------------------------------------------------


def public_key_from_ec_point(point: bytes) -> bytes:
    """CKA_EC_POINT (DER OCTET STRING, or raw as some modules give it) → 65-byte 04‖x‖y."""
    if len(point) == 67 and point[:2] == b"\x04\x41":
        point = point[2:]
    if len(point) != 65 or point[0] != 4:
        raise SignatureError(f"CKA_EC_POINT of {len(point)} bytes is not an uncompressed point")
    return point


@dataclass(frozen=True, slots=True)
class Pkcs11KeyInfo:
    ref: str  # the URI of this one key
    label: str
    id: bytes
    public_key: bytes
    address: str

    @property
    def key_name(self) -> str:
        return self.ref


def key_uri(token_name: str, label: str, key_id: bytes) -> str:
    from urllib.parse import quote

    parts = [f"pkcs11:{token_name}"]
    if label:
        parts.append(f"object={quote(label, safe='')}")
    if key_id:
        parts.append("id=" + "".join(f"%{b:02x}" for b in key_id))
    return ";".join(parts)


def _describe(session: Any, private: Any, token_name: str) -> Pkcs11KeyInfo:
    """Check one private key object and read its public key; KeyLoadFailed saying why not."""
    from pkcs11 import Attribute, KeyType, ObjectClass

    label = str(private[Attribute.LABEL] or "")
    key_id = bytes(private[Attribute.ID] or b"")
    name = key_uri(token_name, label, key_id)
    if private.key_type != KeyType.EC:
        raise KeyLoadFailed(f"PKCS#11 key {name} is {private.key_type.name}, not EC", "spec")
    if bytes(private[Attribute.EC_PARAMS]) != SECP256K1_OID_DER:
        raise KeyLoadFailed(
            f"PKCS#11 key {name} is not on secp256k1 (CKA_EC_PARAMS "
            f"{bytes(private[Attribute.EC_PARAMS]).hex()}): Ethereum needs a secp256k1 key",
            "spec",
        )
    if not private[Attribute.SIGN]:
        raise KeyLoadFailed(f"PKCS#11 key {name}: CKA_SIGN is false, it may not sign", "spec")
    query: dict[Any, Any] = {
        Attribute.CLASS: ObjectClass.PUBLIC_KEY,
        Attribute.KEY_TYPE: KeyType.EC,
    }
    if key_id:
        query[Attribute.ID] = key_id
    else:
        query[Attribute.LABEL] = label
    publics = list(session.get_objects(query))
    if len(publics) != 1:
        raise KeyLoadFailed(
            f"PKCS#11 key {name}: {len(publics)} public keys have its "
            f"{'CKA_ID' if key_id else 'label'}; exactly one must (keys create makes the pair)",
            "invalid",
        )
    try:
        public_key = public_key_from_ec_point(bytes(publics[0][Attribute.EC_POINT]))
        address = address_from_public_key(public_key)
    except (SignatureError, ValueError) as exc:
        raise KeyLoadFailed(f"PKCS#11 key {name}: {exc}", "invalid") from exc
    return Pkcs11KeyInfo(name, label, key_id, public_key, address)


def _private_query(label: str, key_id: bytes) -> dict[Any, Any]:
    from pkcs11 import Attribute, ObjectClass

    query: dict[Any, Any] = {Attribute.CLASS: ObjectClass.PRIVATE_KEY}
    if key_id:
        query[Attribute.ID] = key_id
    if label:
        query[Attribute.LABEL] = label
    return query


def find_keys(session: Any, spec: Pkcs11Spec) -> list[Pkcs11KeyInfo | KeyLoadFailed]:
    """The keys `spec` names on the open session (in a worker thread)."""
    from pkcs11 import Attribute, KeyType

    if not spec.lists:
        privates = list(session.get_objects(_private_query(spec.object, spec.id)))
        name = key_uri(spec.token_name, spec.object, spec.id)
        if not privates:
            return [KeyLoadFailed(f"PKCS#11 key {name}: no such private key on the token "
                                  "(check object= / id=, and that the PIN's user sees it)",
                                  "not_found")]  # fmt: skip
        if len(privates) > 1:
            return [KeyLoadFailed(f"PKCS#11 key {name}: {len(privates)} private keys match; "
                                  "name it by label and id", "invalid")]  # fmt: skip
        candidates = privates
    else:
        query = _private_query("", b"")
        query[Attribute.KEY_TYPE] = KeyType.EC
        candidates = [
            p for p in session.get_objects(query)
            if str(p[Attribute.LABEL] or "").startswith(spec.label_prefix)
            and bytes(p[Attribute.EC_PARAMS]) == SECP256K1_OID_DER
        ]  # fmt: skip
    found: list[Pkcs11KeyInfo | KeyLoadFailed] = []
    for private in candidates:
        try:
            found.append(_describe(session, private, spec.token_name))
        except KeyLoadFailed as exc:
            found.append(exc)
    return found


def load_failure(exc: BaseException, what: str) -> KeyLoadFailed:
    """KeyLoadFailed for a PKCS#11 error while loading `what` (never with the PIN)."""
    if isinstance(exc, KeyLoadFailed):
        return exc
    name = type(exc).__name__
    if name == "PinIncorrect" or name.startswith("Pin") or name == "UserPinNotInitialized":
        return KeyLoadFailed(f"{what}: {ckr_name(exc)}: {_ADVICE.get(name, '')}", "access_denied")
    if _user_type_invalid(exc):
        return KeyLoadFailed(
            f"{what}: CKR_USER_TYPE_INVALID: the token refuses to log in as this user type: "
            "--pkcs11-user-type crypto-user is Thales Luna's Crypto User (vendor-defined); "
            "AWS CloudHSM, YubiHSM 2, SoftHSM2 and a Luna Crypto Officer log in as user",
            "access_denied",
        )
    if isinstance(exc, OSError) or "while loading" in str(exc):  # dlopen: path, arch, deps
        return KeyLoadFailed(
            f"{what}: the PKCS#11 module cannot be loaded ({exc}): check --pkcs11-module or "
            "module-path",
            "invalid",
        )
    if name == "NoSuchToken":
        return KeyLoadFailed(
            f"{what}: no such token in the module: check token= / serial= (the token may also "
            "be absent or the HSM down)",
            "unreachable",
            transient=True,
        )
    if is_lost(exc):
        return KeyLoadFailed(
            f"{what}: {ckr_name(exc)}: the token cannot be reached (not present, removed, or "
            "the HSM is down); check the token label or serial and the HSM",
            "unreachable",
            transient=True,
        )
    return KeyLoadFailed(f"{what}: {ckr_name(exc)} {_ADVICE.get(name, '')}".rstrip(), "other")


# --- the signer ---------------------------------------------------------------------------


class Pkcs11Signer(BackendSigner[Pkcs11KeyInfo]):
    """Signs digests with one key of a token, through the token's session pool."""

    backend = "pkcs11"

    def __init__(self, pool: TokenPool, info: Pkcs11KeyInfo) -> None:
        self._pool = pool
        self.info = info
        self._draw = random.random

    def _sign(self, held: _Session, digest: bytes) -> bytes:
        from pkcs11 import Mechanism

        handle = (self.info.label, self.info.id)
        key = held.keys.get(handle)
        if key is None:
            key = held.keys[handle] = held.session.get_key(
                **({"label": self.info.label} if self.info.label else {}),
                **({"id": self.info.id} if self.info.id else {}),
                object_class=_private_class(),
            )
        return bytes(key.sign(digest, mechanism=Mechanism.ECDSA))

    async def sign_digest(self, digest: bytes) -> ProvenSignature:
        for attempt in range(SIGN_ATTEMPTS):
            try:
                raw = await self._pool.run(lambda held: self._sign(held, digest))
                break
            except (HsmUnavailable, HsmRefused):
                raise
            except Exception as exc:
                transient = is_lost(exc) or (isinstance(exc, KeyLoadFailed) and exc.transient)
                if not transient:
                    name = type(exc).__name__
                    advice = _ADVICE.get(name, "see the signer-proxy log")
                    detail = str(exc) if isinstance(exc, KeyLoadFailed) else advice
                    log.error("PKCS#11 key %s: %s", self.info.ref, _label(exc))
                    raise HsmRefused(
                        f"PKCS#11 key {self.info.ref}: {_label(exc)}: {detail}; nothing was sent"
                    ) from None
                delay = backoff_delay(attempt, 0.05, 1.0, self._draw())
                left = remaining()
                if attempt + 1 == SIGN_ATTEMPTS or (left is not None and left <= delay):
                    raise HsmUnavailable(
                        f"PKCS#11 key {self.info.ref}: the token cannot be reached "
                        f"({_label(exc)}): it was removed, logged out or the HSM is down; "
                        "the proxy reconnects on its own: retry"
                    ) from None
                await asyncio.sleep(delay)
        try:
            return raw_signature(raw, digest, self.info.public_key)
        except SignatureError as exc:
            raise HsmRefused(
                f"PKCS#11 key {self.info.ref} returned a signature that does not verify for "
                f"{self.info.address} ({exc}); nothing was sent"
            ) from exc


def _label(exc: BaseException) -> str:
    return "the PIN cannot be read" if isinstance(exc, KeyLoadFailed) else ckr_name(exc)


def _private_class() -> Any:
    from pkcs11 import ObjectClass

    return ObjectClass.PRIVATE_KEY


# --- the backend source -------------------------------------------------------------------


class Pkcs11Source:
    """One `pkcs11:` URI: one key, or every secp256k1 key of a token."""

    def __init__(self, spec: Pkcs11Spec) -> None:
        self.spec = spec

    @property
    def label(self) -> str:
        return self.spec.label

    async def load(self, previous: Mapping[str, Signer], context: LoadContext) -> list[LoadedKey]:
        spec = self.spec
        what = f"PKCS#11 {spec.label}"
        try:
            pool = await asyncio.to_thread(token_pool, spec)
            module_error: BaseException | None = None
        except Exception as exc:  # dlopen or C_Initialize failed
            module_error = exc
        if module_error is not None:
            raise load_failure(module_error, what) from None
        try:
            found = await pool.run(lambda held: _listed(pool, held, spec))
        except Exception as exc:
            failure = load_failure(exc, what)
            if spec.lists:
                raise failure from None
            return [LoadedKey(spec.label, failure=failure, location=spec.token_name)]
        keys: list[LoadedKey] = []
        for item in found:
            if isinstance(item, KeyLoadFailed):
                keys.append(LoadedKey(spec.label if not spec.lists else _ref_of(item, spec),
                                      failure=item, location=spec.token_name,
                                      required=not spec.lists))  # fmt: skip
                continue
            ref = spec.label if not spec.lists else item.ref
            before = previous.get(ref)
            signer: Signer = (
                before
                if isinstance(before, Pkcs11Signer) and before.info == item
                else Pkcs11Signer(pool, item)
            )
            keys.append(LoadedKey(ref, item.ref, spec.token_name, signer, required=not spec.lists))
        return keys


def _listed(
    pool: TokenPool, held: _Session, spec: Pkcs11Spec
) -> list[Pkcs11KeyInfo | KeyLoadFailed]:
    """find_keys, then proof the token was there all along: a token pulled out mid-run can
    leave a session that lists nothing, which must not read as "no keys" (a reload would
    drop them) but as the token being away."""
    found = find_keys(held.session, spec)
    pool.find_token()
    return found


def _ref_of(failure: KeyLoadFailed, spec: Pkcs11Spec) -> str:
    match = re.match(r"PKCS#11 key (\S+)", str(failure))
    return match.group(1) if match else spec.label


def parse_source(text: str, settings: Settings | None) -> Pkcs11Source:
    """The backends.BACKENDS entry point."""
    return Pkcs11Source(parse_uri(text, settings))
