"""What `signer-proxy dev` prints once ready: URLs, accounts, copy-paste client snippets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

RECIPIENT = "0x000000000000000000000000000000000000dEaD"
READY_LINE = "signer-proxy dev is ready"


@dataclass(frozen=True)
class Account:
    alias: str
    address: str
    balance_wei: int


@dataclass(frozen=True)
class BannerInfo:
    """Everything the banner shows; `chain_url` is empty when --upstream is used."""

    proxy_url: str
    node_url: str
    chain_url: str
    chain_id: int
    kms_url: str
    region: str
    accounts: Sequence[Account]
    funding: str
    state_dir: str
    ready_seconds: float
    # The backend the keys live in (dev --backend): its name, and where it is.
    signed_by: str = "the KMS emulator"
    key_store: str = ""  # empty: the KMS emulator (kms_url)
    can_keep: bool = True  # whether --state-dir keeps the keys (not in the cloud emulators)


def format_ether(wei: int) -> str:
    """Wei as ETH, exact, without trailing zeros: 10**18 → "1", 1 → "0.000000000000000001"."""
    text = format(Decimal(wei) / Decimal(10**18), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def render_banner(info: BannerInfo) -> str:
    """The banner's text (ends with a newline)."""
    url = info.proxy_url
    first = info.accounts[0].address
    if info.chain_url:
        ws_url = "ws" + info.chain_url.removeprefix("http")
        node = (
            f"embedded dev chain, chain id {info.chain_id}: {info.chain_url} (HTTP), "
            f"{ws_url} (WebSocket)"
        )
    else:
        node = f"{info.node_url}, chain id {info.chain_id}"
    keys = (
        f"kept in {info.state_dir} (addresses survive a restart)"
        if info.state_dir
        else "in memory only (new addresses next time; --state-dir keeps them)"
        if info.can_keep
        else "in the emulator's memory only (new addresses next time)"
    )
    width = max(len(a.alias) for a in info.accounts)
    lines = [
        f"{READY_LINE} ({info.ready_seconds:.1f} s)",
        "",
        f"  Proxy (JSON-RPC)            {url} (HTTP), ws{url.removeprefix('http')} (WebSocket)",
        f"  Node                        {node}",
        *(
            [f"  Key store                   {info.signed_by}: {info.key_store}"]
            if info.key_store
            else [
                f"  KMS emulator                {info.kms_url} (region {info.region}, any "
                "credentials)"
            ]
        ),
        f"  Keys                        {keys}",
        f"  Funding                     {info.funding}",
        "",
        f"  Accounts (signed by {info.signed_by} through the proxy):",
        *(
            f"    {a.alias:<{width}}  {a.address}  {format_ether(a.balance_wei)} ETH"
            for a in info.accounts
        ),
        "",
        "  cast:",
        f"    cast send --unlocked --from {first} --rpc-url {url} {RECIPIENT} --value 1",
        "  Hardhat (hardhat.config.js):",
        f'    networks: {{ dev: {{ url: "{url}", accounts: "remote" }} }}',
        "  ethers.js (v6):",
        f'    const signer = await new ethers.JsonRpcProvider("{url}").getSigner("{first}");',
        f'    await signer.sendTransaction({{ to: "{RECIPIENT}", value: 1n }});',
        "  web3.py:",
        f'    w3 = Web3(Web3.HTTPProvider("{url}"))',
        f'    w3.eth.send_transaction({{"from": "{first}", "to": "{RECIPIENT}", "value": 1}})',
        "",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)
