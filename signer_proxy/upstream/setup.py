"""The node client from the settings: one URL, or several with failover."""

from __future__ import annotations

import ssl

from signer_proxy.config import Settings, upstream_urls
from signer_proxy.ops.tls import upstream_ssl
from signer_proxy.upstream.credentials import upstream_auth
from signer_proxy.upstream.failover import FailoverUpstream
from signer_proxy.upstream.http import HttpUpstream


def make_upstream(settings: Settings) -> HttpUpstream | FailoverUpstream:
    """The node client: one URL, or several with failover (FailoverUpstream); `aclose` it."""
    urls = upstream_urls(settings.upstream)
    verify = upstream_ssl(settings.upstream_ca_file)  # True: the system's CAs
    nodes = [
        HttpUpstream(
            url,
            settings.upstream_timeout,
            connect_timeout=settings.upstream_connect_timeout,
            ssl_context=verify if isinstance(verify, ssl.SSLContext) else None,
            auth=upstream_auth(url, settings),
        )
        for url in urls
    ]
    if len(nodes) == 1:
        return nodes[0]
    return FailoverUpstream(nodes, settings.upstream_max_lag_blocks)
