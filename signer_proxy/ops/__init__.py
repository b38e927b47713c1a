"""Operating the proxy: metrics, traces, health, logs, shutdown, TLS, the operator page's data."""
