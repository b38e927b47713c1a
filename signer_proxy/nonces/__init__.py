"""Nonces: the seam, the in-process and Redis managers, gap repair."""
