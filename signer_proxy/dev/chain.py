"""The embedded dev chain: eth-tester on py-evm, answering Ethereum JSON-RPC calls.

Not a node of our own: methods are web3.py's eth-tester mapping (`API_ENDPOINTS`, with its
request and result formatters), and this module only adds what a JSON-RPC server needs on top
of it: hex quantities on the wire, camelCase keys, geth's wording for transaction errors (so
clients and the proxy's nonce handling understand them), a configurable chain id, and a correct
`eth_feeHistory` and receipt `logsBloom` (eth-tester's are incomplete). A block is mined per
transaction (eth-tester's auto-mining). `DevChain` is not thread-safe: the server calls it from
one thread.

Errors are the node's, in geth's codes (-32000 for a refused transaction, 3 for a revert),
carried as `NodeRejected`; signer-proxy's own error codes stay in `errors.py`.
"""

from __future__ import annotations

import ast
import contextlib
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from signer_proxy.errors import InvalidParams, MethodNotFound, NodeRejected

DEFAULT_CHAIN_ID = 1337
# What geth answers for a transaction it refuses, and for a call or estimate that reverts.
NODE_SERVER_ERROR = -32000
EXECUTION_REVERTED = 3
CLIENT_VERSION = "signer-proxy-dev/eth-tester (py-evm)"
# Calls whose first param is a transaction request, normalised before eth-tester sees it.
_TRANSACTION_METHODS = (
    "eth_call",
    "eth_estimateGas",
    "eth_sendTransaction",
    "eth_createAccessList",
)
_BLOOM_BYTES = 256


def camel(key: str) -> str:
    """snake_case → camelCase (eth-tester's keys → JSON-RPC's)."""
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def to_json_rpc(value: Any, key: str = "") -> Any:
    """An eth-tester value as JSON-RPC: ints as hex quantities, bytes as hex, camelCase keys."""
    if isinstance(value, bool) or value is None or isinstance(value, float | str):
        return value
    if isinstance(value, int):
        if key == "logsBloom":  # a 256-byte bit field, not a quantity
            return "0x" + value.to_bytes(_BLOOM_BYTES, "big").hex()
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {camel(k): to_json_rpc(v, camel(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_rpc(item, key) for item in value]
    raise TypeError(f"cannot encode {type(value).__name__} as JSON-RPC")


_NONCE = re.compile(r"Invalid transaction nonce: Expected (\d+), but got (\d+)")
# (py-evm's words, geth's words): the prefix that clients and signer-proxy's upstream table
# recognise; py-evm's own sentence follows it, for the details.
_NODE_WORDING: tuple[tuple[str, str], ...] = (
    ("does not have enough balance", "insufficient funds for gas * price + value"),
    ("is lower than block's base fee", "max fee per gas less than block base fee"),
    ("intrinsic gas", "intrinsic gas too low"),
    ("exceeds block gas limit", "exceeds block gas limit"),
)


def node_message(message: str) -> str:
    """py-evm's refusal of a transaction, reworded as geth says it (its sentence kept)."""
    nonce = _NONCE.search(message)
    if nonce:
        expected, got = int(nonce.group(1)), int(nonce.group(2))
        word = "nonce too low" if got < expected else "nonce too high"
        return f"{word}: next nonce {expected}, tx nonce {got}"
    for evm_words, geth_words in _NODE_WORDING:
        if evm_words in message and not message.startswith(geth_words):
            return f"{geth_words}: {message}"
    return message


def percentile_rewards(
    tips_and_gas: Sequence[tuple[int, int]], percentiles: Sequence[float]
) -> list[int]:
    """eth_feeHistory's reward for one block: the tip at each gas-weighted percentile (geth's
    rule: transactions by tip, ascending; first whose cumulative gas reaches p% of the total)."""
    ordered = sorted(tips_and_gas)
    total = sum(gas for _, gas in ordered)
    if not ordered or total == 0:
        return [0 for _ in percentiles]
    rewards = []
    for p in percentiles:
        threshold = total * p / 100
        cumulative = 0
        chosen = ordered[-1][0]
        for tip, gas in ordered:
            cumulative += gas
            if cumulative >= threshold:
                chosen = tip
                break
        rewards.append(chosen)
    return rewards


def effective_tip(tx: dict[str, Any], base_fee: int) -> int:
    """What the block producer earned per gas from one eth-tester transaction."""
    if tx.get("max_fee_per_gas") is not None:
        return int(min(tx["max_priority_fee_per_gas"], tx["max_fee_per_gas"] - base_fee))
    return int(tx["gas_price"]) - base_fee


def raw_transaction_chain_id(raw: bytes) -> int | None:
    """The chain id a signed raw transaction commits to; None for pre-EIP-155 legacy ones.
    ValueError when the bytes are not a transaction."""
    import rlp

    if not raw:
        raise ValueError("empty transaction")
    if raw[0] >= 0xC0:  # legacy: an RLP list whose v (index 6) encodes the chain id
        fields = rlp.decode(raw)
        v = int.from_bytes(fields[6], "big")
        return (v - 35) // 2 if v >= 35 else None
    fields = rlp.decode(raw[1:])  # typed (EIP-2718): chain id is the first field of each type
    return int.from_bytes(fields[0], "big")


def _quantity(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise InvalidParams(f"{name} must be a hex quantity, got {value!r}")


class DevChain:
    """A fresh py-evm chain with eth-tester's ten funded accounts, answering JSON-RPC calls."""

    def __init__(self, chain_id: int = DEFAULT_CHAIN_ID) -> None:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3.providers.eth_tester.defaults import API_ENDPOINTS
        from web3.providers.eth_tester.middleware import request_formatters, result_formatters

        backend = PyEVMBackend()
        # eth-tester hard-codes its chain class's chain_id; a subclass keeps ours through
        # snapshots and reverts, which rebuild the chain from its class.
        chain_class = type(backend.chain)
        backend.chain.__class__ = type("DevChainClass", (chain_class,), {"chain_id": chain_id})
        self.chain_id = chain_id
        self._tester = EthereumTester(backend)  # auto-mines: a block per transaction
        self._endpoints: dict[str, dict[str, Callable[..., Any]]] = API_ENDPOINTS
        self._request_formatters = {str(k): v for k, v in request_formatters.items()}
        self._result_formatters = {str(k): v for k, v in (result_formatters or {}).items()}
        self._own: dict[str, Callable[[list[Any]], Any]] = {
            "eth_chainId": lambda _: self.chain_id,
            "net_version": lambda _: str(self.chain_id),
            "web3_clientVersion": lambda _: CLIENT_VERSION,
            "eth_feeHistory": self._fee_history,
            "eth_sendRawTransaction": self._send_raw_transaction,
        }

    @property
    def funder(self) -> str:
        """eth-tester's first prefunded account (unlocked: eth_sendTransaction works from it)."""
        return str(self._tester.get_accounts()[0])

    def head_number(self) -> int:
        return int(self._tester.get_block_by_number("latest")["number"])

    def new_head(self, number: int) -> dict[str, Any]:
        """Block `number` as an eth_subscribe("newHeads") notification carries it."""
        block = self.request("eth_getBlockByNumber", [hex(number), False])
        for body_field in ("transactions", "uncles", "withdrawals", "size", "totalDifficulty"):
            block.pop(body_field, None)
        return dict(block)

    def request(self, method: str, params: Any) -> Any:
        """One JSON-RPC call's result, JSON-ready; NodeRejected / InvalidParams /
        MethodNotFound as the node's error."""
        if not isinstance(params, list):
            raise InvalidParams(f"the dev chain takes {method}'s params as an array")
        if method in self._own:
            return to_json_rpc(self._own[method](params))
        namespace, _, name = method.partition("_")
        delegate = self._endpoints.get(namespace, {}).get(name)
        if delegate is None:
            raise MethodNotFound(
                f"the dev chain (eth-tester) does not implement {method}; use --upstream with "
                "anvil or another node if you need it"
            )
        if method in _TRANSACTION_METHODS and params and isinstance(params[0], dict):
            tx = self._transaction_request(params[0])
            if method == "eth_sendTransaction" and "gas" not in tx:  # a node estimates it
                tx["gas"] = self.request("eth_estimateGas", [tx])
            # Every transaction is mined at once, so the pending state is the latest one
            # (and eth-tester refuses "pending" here).
            params = [tx, *("latest" if p == "pending" else p for p in params[1:])]
        return to_json_rpc(self._call(method, delegate, params))

    def _transaction_request(self, tx: dict[str, Any]) -> dict[str, Any]:
        tx = {k: v for k, v in tx.items() if v is not None}
        if "input" in tx:  # the newer name; eth-tester knows only "data"
            data = tx.pop("input")
            tx.setdefault("data", data)
        if "from" not in tx:  # as web3's eth-tester provider does
            tx["from"] = self.funder
        return tx

    def _call(self, method: str, delegate: Callable[..., Any], params: list[Any]) -> Any:
        from eth_tester.exceptions import TransactionFailed
        from eth_tester.exceptions import ValidationError as TesterValidationError
        from eth_utils.exceptions import ValidationError as EvmValidationError

        try:
            formatter = self._request_formatters.get(method)
            if formatter is not None:
                params = list(formatter(params))
            result = delegate(self._tester, params)
        except NotImplementedError:
            raise MethodNotFound(
                f"the dev chain (eth-tester) does not implement {method}; use --upstream with "
                "anvil or another node if you need it"
            ) from None
        except TransactionFailed as exc:
            raise _reverted(exc) from None
        except (TesterValidationError, EvmValidationError) as exc:
            raise NodeRejected(NODE_SERVER_ERROR, node_message(str(exc))) from None
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise InvalidParams(f"invalid params for {method}: {exc}") from None
        except Exception as exc:
            revert = _web3_revert(exc)
            if revert is None:
                raise
            raise revert from None
        result_formatter = self._result_formatters.get(method)
        if result_formatter is not None:
            result = result_formatter(result)
        if method == "eth_getTransactionReceipt" and isinstance(result, dict):
            result = _with_logs_bloom(result)
        return result

    def _send_raw_transaction(self, params: list[Any]) -> Any:
        # py-evm does not check the chain id a transaction was signed for; geth does.
        from eth_utils.hexadecimal import decode_hex

        try:
            chain_id = raw_transaction_chain_id(decode_hex(params[0]))
        except Exception:  # not hex, not RLP, too few fields: eth-tester words it below
            chain_id = self.chain_id
        if chain_id is not None and chain_id != self.chain_id:
            raise NodeRejected(
                NODE_SERVER_ERROR,
                f"invalid chain id for signer: have {chain_id} want {self.chain_id}",
            )
        return self._call(
            "eth_sendRawTransaction", self._endpoints["eth"]["sendRawTransaction"], params
        )

    def _fee_history(self, params: list[Any]) -> dict[str, Any]:
        if len(params) < 2:
            raise InvalidParams("eth_feeHistory takes [blockCount, newestBlock, percentiles]")
        count = _quantity(params[0], "blockCount")
        if not 1 <= count <= 1024:
            raise InvalidParams("blockCount must be between 1 and 1024")
        percentiles = params[2] if len(params) > 2 and params[2] is not None else []
        if not isinstance(percentiles, list) or not all(
            isinstance(p, int | float) and 0 <= p <= 100 for p in percentiles
        ):
            raise InvalidParams("rewardPercentiles must be numbers from 0 to 100")
        head = self.head_number()
        newest_tag = params[1]
        if newest_tag in ("latest", "pending", "safe", "finalized"):
            newest = head
        elif newest_tag == "earliest":
            newest = 0
        else:
            newest = _quantity(newest_tag, "newestBlock")
        if newest > head:
            raise InvalidParams(f"newestBlock {newest} is after the head block {head}")
        oldest = max(0, newest - count + 1)
        base_fees, ratios, rewards = [], [], []
        for number in range(oldest, newest + 1):
            block = self._tester.get_block_by_number(number, full_transactions=True)
            base_fee = int(block["base_fee_per_gas"])
            base_fees.append(base_fee)
            ratios.append(block["gas_used"] / block["gas_limit"])
            if percentiles:
                rewards.append(percentile_rewards(self._tips(block, base_fee), percentiles))
        after = "pending" if newest == head else newest + 1
        base_fees.append(int(self._tester.get_block_by_number(after)["base_fee_per_gas"]))
        history: dict[str, Any] = {
            "oldest_block": oldest,
            "base_fee_per_gas": base_fees,
            "gas_used_ratio": ratios,
        }
        if percentiles:
            history["reward"] = rewards
        return history

    def _tips(self, block: dict[str, Any], base_fee: int) -> list[tuple[int, int]]:
        tips = []
        for tx in block["transactions"]:
            receipt = self._tester.get_transaction_receipt(tx["hash"])
            tips.append((effective_tip(tx, base_fee), int(receipt["gas_used"])))
        return tips


def logs_bloom(logs: Iterable[dict[str, Any]]) -> int:
    """The 2048-bit bloom of receipt logs (address and topics), as an int."""
    from eth_bloom.bloom import BloomFilter
    from eth_utils.hexadecimal import decode_hex

    bloom = BloomFilter()
    for log in logs:
        bloom.add(decode_hex(log["address"]))
        for topic in log["topics"]:
            bloom.add(decode_hex(topic) if isinstance(topic, str) else bytes(topic))
    return int(bloom)


def _with_logs_bloom(receipt: dict[str, Any]) -> dict[str, Any]:
    receipt = dict(receipt)
    receipt.pop("state_root", None)  # pre-Byzantium "root"; clients read status instead
    receipt.setdefault("logsBloom", logs_bloom(receipt.get("logs", [])))
    return receipt


def _reverted(exc: Exception) -> NodeRejected:
    """A revert as geth reports it: code 3, the reason in the message, revert data in data."""
    first = exc.args[0] if exc.args else ""
    if isinstance(first, Exception):
        first = first.args[0] if first.args else ""
    data = None
    reason = str(first)
    if isinstance(first, str) and first[:2] in ("b'", 'b"'):  # eth_call: repr of the bytes
        with contextlib.suppress(ValueError, SyntaxError):
            first = ast.literal_eval(first)
    if isinstance(first, bytes):
        data = "0x" + first.hex()
        reason = _decode_error_string(first) or data
    if reason.startswith("execution reverted"):
        return NodeRejected(EXECUTION_REVERTED, reason, data)
    return NodeRejected(EXECUTION_REVERTED, f"execution reverted: {reason}", data)


def _decode_error_string(data: bytes) -> str | None:
    """The reason of a Solidity `Error(string)` revert, else None."""
    if data[:4] != bytes.fromhex("08c379a0"):
        return None
    try:
        from eth_abi import abi

        return str(abi.decode(["string"], data[4:])[0])
    except Exception:  # malformed revert data: report the raw bytes instead
        return None


def _web3_revert(exc: Exception) -> NodeRejected | None:
    """web3's mapping raises its own classes for panics and CCIP reads; keep their data."""
    from web3.exceptions import ContractPanicError, OffchainLookup

    if isinstance(exc, ContractPanicError | OffchainLookup):
        return NodeRejected(EXECUTION_REVERTED, f"execution reverted: {exc}", exc.data)
    return None
