"""The node: the HTTP pool, failover, the WebSocket to the node, the node-error table."""
