"""The signer-proxy command."""
