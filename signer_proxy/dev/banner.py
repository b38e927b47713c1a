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
    per_chain_wei: tuple[int, ...] = ()  # with several chains: its balance on each, in order


@dataclass(frozen=True)
class DevChainLine:
    """One of several embedded chains: its name, id, URL through the proxy, and its node."""

    name: str
    chain_id: int
    url: str  # the proxy's /chain/NAME
    node_url: str


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
    chains: Sequence[DevChainLine] = ()  # with dev --chains N (N > 1); the first is on / too


def format_ether(wei: int) -> str:
    """Wei as ETH, exact, without trailing zeros: 10**18 → "1", 1 → "0.000000000000000001"."""
    text = format(Decimal(wei) / Decimal(10**18), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _keys_text(info: BannerInfo) -> str:
    """Where the keys are kept, and whether they survive a restart."""
    if info.state_dir:
        return f"kept in {info.state_dir} (addresses survive a restart)"
    if info.can_keep:
        return "in memory only (new addresses next time; --state-dir keeps them)"
    return "in the emulator's memory only (new addresses next time)"


def _store_line(info: BannerInfo) -> str:
    """The key backend's line: the KMS emulator, or the store named by `key_store`."""
    if info.key_store:
        return f"  Key store                   {info.signed_by}: {info.key_store}"
    return f"  KMS emulator                {info.kms_url} (region {info.region}, any credentials)"


def _balance(account: Account, names: Sequence[str]) -> str:
    """The account's balance: one figure, or one per chain when the chains differ."""
    if len(set(account.per_chain_wei)) > 1:
        return ", ".join(
            f"{format_ether(wei)} ETH on {name}"
            for name, wei in zip(names, account.per_chain_wei, strict=True)
        )
    return f"{format_ether(account.balance_wei)} ETH"


def render_banner(info: BannerInfo) -> str:
    """The banner's text (ends with a newline)."""
    if info.chains:
        return _render_several(info)
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
    keys = _keys_text(info)
    width = max(len(a.alias) for a in info.accounts)
    lines = [
        f"{READY_LINE} ({info.ready_seconds:.1f} s)",
        "",
        f"  Proxy (JSON-RPC)            {url} (HTTP), ws{url.removeprefix('http')} (WebSocket)",
        f"  Node                        {node}",
        _store_line(info),
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
        "  Hardhat 2 or 3 (hardhat.config.js / .ts):",
        f'    networks: {{ dev: {{ type: "http", url: "{url}", accounts: "remote" }} }}',
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


def _render_several(info: BannerInfo) -> str:
    """The banner of `dev --chains N`: a line per chain, its URL and a cast command each."""
    url = info.proxy_url
    first = info.accounts[0].address
    names = [c.name for c in info.chains]
    name_width = max(map(len, names))
    keys = _keys_text(info)
    width = max(len(a.alias) for a in info.accounts)
    main = info.chains[0]
    lines = [
        f"{READY_LINE} ({info.ready_seconds:.1f} s)",
        "",
        f"  Proxy (JSON-RPC)            {url} (HTTP), ws{url.removeprefix('http')} (WebSocket)",
        f"  Chains                      {len(info.chains)} embedded, one path each (HTTP and "
        f"WebSocket); / is {main.name}",
        *(
            f"    {c.name:<{name_width}}  chain id {c.chain_id}  {c.url}  (its node: {c.node_url})"
            for c in info.chains
        ),
        _store_line(info),
        f"  Keys                        {keys}",
        f"  Funding                     {info.funding}",
        "",
        f"  Accounts (signed by {info.signed_by} through the proxy, on every chain):",
        *(f"    {a.alias:<{width}}  {a.address}  {_balance(a, names)}" for a in info.accounts),
        "",
        "  cast (one command per chain):",
        *(
            f"    cast send --unlocked --from {first} --rpc-url {c.url} {RECIPIENT} --value 1"
            for c in info.chains
        ),
        "  Hardhat 2 or 3 (hardhat.config.js / .ts):",
        "    networks: { "
        + ", ".join(
            f'{c.name}: {{ type: "http", url: "{c.url}", accounts: "remote" }}' for c in info.chains
        )
        + " }",
        f"  ethers.js (v6), on {main.name}:",
        f'    const signer = await new ethers.JsonRpcProvider("{main.url}").getSigner("{first}");',
        f'    await signer.sendTransaction({{ to: "{RECIPIENT}", value: 1n }});',
        f"  web3.py, on {main.name}:",
        f'    w3 = Web3(Web3.HTTPProvider("{main.url}"))',
        f'    w3.eth.send_transaction({{"from": "{first}", "to": "{RECIPIENT}", "value": 1}})',
        "  (the other chains: the same with their URL above)",
        "",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)
