"""EIP-712 typed data, encoded as MetaMask encodes it, refusing what any wallet library refuses.

Pure, no I/O: it computes digests from an already-parsed typed-data dict. The contract is
`@metamask/eth-sig-util`'s `TypedDataUtils.eip712Hash` (V3 and V4), what MetaMask and most
dApps' verifiers use. eth-sig-util is lax in places (text where bytesN is expected, `null`
for a struct, "false" as true, an address made of arbitrary characters); viem's
`hashTypedData` is lax in others. Every input is therefore checked against the intersection
of what both accept, and an input where either refuses or where they would hash differently
is refused with `InvalidParams` (-32602) naming the field and what was expected. Every
accepted input hashes to eth-sig-util's digest (and viem's: the tests check both).
docs/signing.md lists each edge and the decision taken.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from signer_proxy.errors import InvalidParams
from signer_proxy.eth.ecdsa import checksum_address, keccak256

Version = Literal["V3", "V4"]

EIP712_PREFIX = b"\x19\x01"
# The domain fields EIP-712 defines, with the only types they may have.
DOMAIN_FIELD_TYPES = {
    "name": "string",
    "version": "string",
    "chainId": "uint256",
    "verifyingContract": "address",
    "salt": "bytes32",
}
# JavaScript numbers are doubles: larger JSON integers reach a JS wallet already rounded.
MAX_SAFE_INTEGER = 2**53 - 1

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ARRAY_RE = re.compile(r"^(.*)\[(\d*)\]$")
_INT_RE = re.compile(r"^(u?)int(\d+)$")
_BYTESN_RE = re.compile(r"^bytes(\d+)$")
_ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HEX_BYTES_RE = re.compile(r"^0x(?:[0-9a-fA-F]{2})*$")
_DECIMAL_RE = re.compile(r"^-?[0-9]+$")
_HEX_NUMBER_RE = re.compile(r"^0x[0-9a-fA-F]+$")
_ATOMIC = {"address", "bool", "string", "bytes"}


def _refuse(path: str, expected: str, value: Any = None, *, show: bool = True) -> InvalidParams:
    shown = f", got {_short(value)}" if show else ""
    return InvalidParams(f"typed data {path}: expected {expected}{shown}")


def _short(value: Any) -> str:
    text = "null" if value is None else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _base_type(type_name: str) -> str:
    while (match := _ARRAY_RE.match(type_name)) is not None:
        type_name = match.group(1)
    return type_name


def _atomic_ok(type_name: str) -> bool:
    if type_name in _ATOMIC:
        return True
    if (match := _BYTESN_RE.match(type_name)) is not None:
        size = int(match.group(1))
        return str(size) == match.group(1) and 1 <= size <= 32
    if (match := _INT_RE.match(type_name)) is not None:
        bits = int(match.group(2))
        return str(bits) == match.group(2) and 8 <= bits <= 256 and bits % 8 == 0
    return False


def _check_types(types: dict[str, Any], version: Version) -> dict[str, list[tuple[str, str]]]:
    """Each struct as a list of (name, type); refuses malformed, unknown or unsupported types."""
    structs: dict[str, list[tuple[str, str]]] = Structs()
    for struct, fields in types.items():
        if not isinstance(struct, str) or not _NAME_RE.match(struct):
            raise _refuse(f"types key {struct!r}", "a type name of letters, digits and _")
        if _atomic_ok(struct) or struct in ("int", "uint", "function"):
            raise _refuse(f"types.{struct}", "a struct name that is not an atomic type's name")
        if not isinstance(fields, list):
            raise _refuse(f"types.{struct}", "a list of {name, type} fields", fields)
        seen: set[str] = set()
        parsed: list[tuple[str, str]] = []
        for index, field in enumerate(fields):
            where = f"types.{struct}[{index}]"
            if not isinstance(field, dict):
                raise _refuse(where, "an object {name, type}", field)
            name, type_name = field.get("name"), field.get("type")
            if not isinstance(name, str) or not name:
                raise _refuse(f"{where}.name", "a non-empty string", name)
            if not isinstance(type_name, str):
                raise _refuse(f"{where}.type", "a type name string", type_name)
            if name in seen:
                raise _refuse(f"types.{struct}", f"field names once each; {name!r} is repeated")
            seen.add(name)
            parsed.append((name, type_name))
        structs[struct] = parsed
    for struct, fields in structs.items():
        for name, type_name in fields:
            where = f"types.{struct}.{name}"
            base = _base_type(type_name)
            if base not in structs and not _atomic_ok(base):
                raise _refuse(
                    where,
                    "address, bool, string, bytes, bytes1..bytes32, uint8..uint256, "
                    f"int8..int256, a struct in types, or an array of these; {type_name!r} is "
                    "none of these (size the integer types: uint256, not uint)",
                    show=False,
                )
            if version == "V3" and base != type_name:
                raise _refuse(
                    where,
                    f"no array types under eth_signTypedData_v3 ({type_name} is an array "
                    "type, which eth_signTypedData_v3 does not support: use eth_signTypedData_v4)",
                    show=False,
                )
    return structs


def _dependencies(primary: str, structs: dict[str, list[tuple[str, str]]]) -> list[str]:
    found: set[str] = set()
    pending = [primary]
    while pending:
        struct = pending.pop()
        if struct in found:
            continue
        found.add(struct)
        for _, type_name in structs[struct]:
            base = _base_type(type_name)
            if base in structs:
                pending.append(base)
    found.discard(primary)
    return [primary, *sorted(found)]


class Structs(dict[str, list[tuple[str, str]]]):
    """One document's struct types: name -> [(field, type)], each type hash computed once.

    encodeType walks a struct's dependencies and joins their text: per struct *value* that
    made the work (types text x values), and a document inside every bound held the loop
    for 4.9 s (found by review). Once per struct per digest it is milliseconds."""

    def __init__(self) -> None:
        super().__init__()
        self.type_hashes: dict[str, bytes] = {}


def type_hash(structs: dict[str, list[tuple[str, str]]], struct: str) -> bytes:
    """keccak(encodeType(struct)), kept in `structs` when it can keep it."""
    if not isinstance(structs, Structs):
        return keccak256(encode_type(struct, structs).encode())
    found = structs.type_hashes.get(struct)
    if found is None:
        found = structs.type_hashes[struct] = keccak256(encode_type(struct, structs).encode())
    return found


def encode_type(primary: str, structs: dict[str, list[tuple[str, str]]]) -> str:
    """EIP-712 encodeType: the primary struct, then its dependencies sorted by name."""
    return "".join(
        f"{struct}({','.join(f'{t} {n}' for n, t in structs[struct])})"
        for struct in _dependencies(primary, structs)
    )


def _integer(type_name: str, value: Any, path: str) -> int:
    match = _INT_RE.match(type_name)
    assert match is not None
    signed, bits = match.group(1) == "", int(match.group(2))
    article = "an" if type_name.startswith("int") else "a"
    expected = (
        f"{article} {type_name}: a JSON integer of at most 2^53-1 in magnitude, or a decimal "
        "or 0x-hex string"
    )
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _refuse(path, expected, value)
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise _refuse(
                path,
                f"{expected} (JavaScript wallets round a JSON number this large: give it as a "
                "decimal string)",
                value,
            )
        number = value
    elif _DECIMAL_RE.match(value):
        number = int(value)
    elif _HEX_NUMBER_RE.match(value):
        number = int(value[2:], 16)
    else:
        raise _refuse(path, expected, value)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if not low <= number <= high:
        raise _refuse(path, f"{article} {type_name} in [{low}, {high}]", value)
    return number


def _hex_bytes(value: Any, path: str, expected: str) -> bytes:
    if not isinstance(value, str) or not _HEX_BYTES_RE.match(value):
        raise _refuse(path, expected, value)
    return bytes.fromhex(value[2:])


def _address(value: Any, path: str) -> bytes:
    expected = "an address: 0x and 40 hex digits, all lower-case or EIP-55 checksummed"
    if not isinstance(value, str) or not _ADDRESS_RE.match(value):
        raise _refuse(path, expected, value)
    raw = bytes.fromhex(value[2:])
    if value != value.lower() and value != checksum_address(raw):
        raise _refuse(path, f"{expected} (the checksum is wrong)", value)
    return raw


def encode_field(
    structs: dict[str, list[tuple[str, str]]], type_name: str, value: Any, path: str
) -> bytes:
    """The 32-byte EIP-712 encoding of one value of `type_name`."""
    if type_name in structs:
        if not isinstance(value, dict):
            raise _refuse(
                path,
                f"an object of type {type_name} (null is refused: MetaMask would hash it as "
                "zero under V4, viem refuses it)",
                value,
            )
        return hash_struct(structs, type_name, value, path)
    if (array := _ARRAY_RE.match(type_name)) is not None:
        item_type, size = array.group(1), array.group(2)
        if not isinstance(value, list):
            raise _refuse(path, f"an array of {item_type}", value)
        if size and len(value) != int(size):
            raise _refuse(path, f"{size} items for {type_name}, got {len(value)}", show=False)
        return keccak256(
            b"".join(
                encode_field(structs, item_type, item, f"{path}[{i}]")
                for i, item in enumerate(value)
            )
        )
    if type_name == "address":
        return bytes(12) + _address(value, path)
    if type_name == "bool":
        if not isinstance(value, bool):
            raise _refuse(path, "a JSON boolean true or false (not a string or number)", value)
        return int(value).to_bytes(32, "big")
    if type_name == "string":
        if not isinstance(value, str):
            raise _refuse(path, "a string", value)
        try:
            return keccak256(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise _refuse(
                path, "valid Unicode text (it has a lone surrogate)", show=False
            ) from None
    if type_name == "bytes":
        return keccak256(_hex_bytes(value, path, "bytes as 0x and an even number of hex digits"))
    if (bytes_n := _BYTESN_RE.match(type_name)) is not None:
        size = int(bytes_n.group(1))
        raw = _hex_bytes(value, path, f"a {type_name}: 0x and exactly {2 * size} hex digits")
        if len(raw) != size:
            raise _refuse(path, f"a {type_name}: 0x and exactly {2 * size} hex digits", value)
        return raw.ljust(32, b"\0")
    number = _integer(type_name, value, path)
    return (number % 2**256).to_bytes(32, "big")


def hash_struct(
    structs: dict[str, list[tuple[str, str]]], struct: str, data: dict[str, Any], path: str
) -> bytes:
    """keccak(typeHash ‖ encodeData): every field of the struct must be present."""
    parts = [type_hash(structs, struct)]
    for name, type_name in structs[struct]:
        if name not in data:
            raise _refuse(
                f"{path}.{name}", f"a value of type {type_name}; it is missing", show=False
            )
        parts.append(encode_field(structs, type_name, data[name], f"{path}.{name}"))
    return keccak256(b"".join(parts))


def _domain_structs(
    types: dict[str, Any], domain: dict[str, Any], structs: dict[str, list[tuple[str, str]]]
) -> None:
    if "EIP712Domain" not in types:
        if domain:
            raise InvalidParams(
                "typed data types has no EIP712Domain while the domain has fields "
                f"({', '.join(sorted(map(str, domain)))}): MetaMask (eth-sig-util) would then "
                "sign an empty domain and viem one inferred from the domain, so the signature "
                "would verify for one and not the other; list the domain's fields in "
                "types.EIP712Domain"
            )
        structs["EIP712Domain"] = []
        return
    for name, type_name in structs["EIP712Domain"]:
        wanted = DOMAIN_FIELD_TYPES.get(name)
        if wanted is None:
            raise _refuse(
                f"types.EIP712Domain.{name}",
                f"only EIP-712's domain fields {', '.join(DOMAIN_FIELD_TYPES)}",
                show=False,
            )
        if type_name != wanted:
            raise _refuse(f"types.EIP712Domain.{name}", f"type {wanted}", type_name)
    listed = {name for name, _ in structs["EIP712Domain"]}
    unlisted = sorted(str(k) for k in domain if k not in listed)
    if unlisted:
        raise InvalidParams(
            f"typed data domain has {', '.join(unlisted)}, which types.EIP712Domain does not "
            "list: it would not be signed (wallets ignore it); list it in types.EIP712Domain or "
            "remove it"
        )


def typed_data_digest(data: dict[str, Any], version: Version = "V4") -> bytes:
    """keccak(0x19 0x01 ‖ domainSeparator ‖ hashStruct(message)), as eth-sig-util's eip712Hash.

    `data` has types (a dict), primaryType (a str), domain and message (dicts); a primaryType
    of EIP712Domain signs the domain separator alone, as wallets do.
    """
    types, primary = data["types"], data["primaryType"]
    domain, message = data["domain"], data["message"]
    structs = _check_types(types, version)
    _domain_structs(types, domain, structs)
    domain_separator = hash_struct(structs, "EIP712Domain", domain, "domain")
    if primary == "EIP712Domain":
        return keccak256(EIP712_PREFIX + domain_separator)
    if primary not in structs:
        raise _refuse("primaryType", "the name of one of its types", primary)
    return keccak256(
        EIP712_PREFIX + domain_separator + hash_struct(structs, primary, message, "message")
    )
