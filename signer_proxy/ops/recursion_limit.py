"""Keep Python's recursion limit at its default while the proxy serves.

py_ecc (imported through eth-account) and py-evm raise `sys.setrecursionlimit` to 100,000 at
import. With that limit a deep enough input (typed data nested 100,000 levels, say) recurses
past the C stack and the process dies with SIGSEGV instead of raising RecursionError. The
proxy puts the limit back once its imports are done (create_app) and again when it starts
(anything imported lazily in between): deep input then fails as a Python exception, which
the router turns into an error for that one call.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

# CPython's default; deep enough for everything the proxy does (its deepest recursion is a
# typed-data type graph, capped far below this by eth/messages.py).
DEFAULT_RECURSION_LIMIT = 1000


def restore_recursion_limit() -> None:
    """Set the recursion limit back to the default if an import raised it."""
    current = sys.getrecursionlimit()
    if current != DEFAULT_RECURSION_LIMIT:
        sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)
        log.debug("recursion limit %d (raised by an import) set back to %d", current,
                  DEFAULT_RECURSION_LIMIT)  # fmt: skip
