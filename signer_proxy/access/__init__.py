"""Who may sign what: API keys, policy, the signing gate, budgets, rate limits, audit."""
