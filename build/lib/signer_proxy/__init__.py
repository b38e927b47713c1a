"""signer-proxy: a JSON-RPC signing proxy for Ethereum/EVM chains with keys in AWS KMS."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("signer-proxy")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
