"""Transports: the only code that touches aiohttp's request and response objects."""
