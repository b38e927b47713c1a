"""`signer-proxy dev`: the KMS emulator and the embedded chain, for one machine."""
