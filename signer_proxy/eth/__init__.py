"""Pure Ethereum: hex data, ECDSA, RLP, typed data, blobs, transaction requests, encoding."""
