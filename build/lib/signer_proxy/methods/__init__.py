"""Local JSON-RPC methods, one module per family; `table` maps method names to handlers."""
