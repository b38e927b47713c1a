"""A SoftHSM2 token in a directory of its own (development, tests, the benchmark).

SoftHSM2 (Debian package softhsm2) is a real PKCS#11 module that keeps its tokens in files;
SOFTHSM2_CONF points the module at a config naming the token directory, so a token made
here touches nothing else on the machine.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from signer_proxy.errors import ConfigError

MODULE_GLOBS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/*/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)


def softhsm_module() -> str:
    """The path of libsofthsm2.so; ConfigError saying how to install it when missing."""
    for pattern in MODULE_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise ConfigError("SoftHSM2 is not installed: apt-get install softhsm2 (make tools does)")


@dataclass(frozen=True)
class SoftHsmToken:
    directory: Path
    conf: Path
    label: str
    pin_file: Path
    module: str

    @property
    def env(self) -> dict[str, str]:
        """The environment a process needs to see this token."""
        return {"SOFTHSM2_CONF": str(self.conf)}

    @property
    def tokens(self) -> Path:
        return self.directory / "tokens"


def make_token(directory: Path, label: str = "signer", pin: str | None = None) -> SoftHsmToken:
    """A fresh, initialised token `label` in `directory` (its conf, token dir and PIN file)."""
    util = shutil.which("softhsm2-util")
    if util is None:
        raise ConfigError("softhsm2-util is missing: apt-get install softhsm2 (make tools does)")
    directory.mkdir(parents=True, exist_ok=True)
    tokens = directory / "tokens"
    tokens.mkdir(exist_ok=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    pin_file = directory / "pin"
    if pin is None and pin_file.exists():  # a state directory made before: its token's PIN
        pin = pin_file.read_text().strip()
    pin = pin or os.urandom(8).hex()
    pin_file.write_text(pin + "\n")
    pin_file.chmod(0o600)
    existing = subprocess.run(
        [util, "--show-slots"], capture_output=True, text=True, env={**os.environ,
        "SOFTHSM2_CONF": str(conf)}, check=False,
    )  # fmt: skip
    if f"Label:            {label}" not in existing.stdout:
        subprocess.run(
            [util, "--init-token", "--free", "--label", label, "--pin", pin,
             "--so-pin", os.urandom(8).hex()],
            capture_output=True, text=True, check=True,
            env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        )  # fmt: skip
    return SoftHsmToken(directory, conf, label, pin_file, softhsm_module())


async def dev_token_keys(directory: Path, count: int) -> tuple[SoftHsmToken, list[tuple[str, str]]]:
    """A token `dev` in `directory` holding keys dev-0 … dev-(count-1) (made when missing):
    the token and (key URI, address) of each, for `signer-proxy dev --backend softhsm`."""
    import asyncio

    from signer_proxy.keys.pkcs11_keys import Pkcs11KeyInfo, find_keys, parse_uri, token_pool
    from signer_proxy.keys.pkcs11_manage import make_key

    token = await asyncio.to_thread(make_token, directory, "dev")
    os.environ.update(token.env)  # the module reads SOFTHSM2_CONF when it is initialised
    uri = f"pkcs11:token=dev?module-path={token.module}&pin-source=file:{token.pin_file}"
    spec = parse_uri(uri)
    pool = token_pool(spec)
    found = await pool.run(lambda held: find_keys(held.session, spec))
    have = {item.label: item for item in found if isinstance(item, Pkcs11KeyInfo)}
    keys: list[tuple[str, str]] = []
    for index in range(count):
        label = f"dev-{index}"
        if label in have:
            keys.append((have[label].ref, have[label].address))
        else:
            made = await make_key(spec, label)
            keys.append((made.uri, made.address))
    return token, keys
