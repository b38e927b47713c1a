"""What needs the node to make a transaction: filling a request, and the signing step."""
