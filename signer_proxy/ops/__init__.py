"""Operating the proxy: metrics, health, logs, shutdown, TLS."""
