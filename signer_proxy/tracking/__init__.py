"""Transactions after the send: tracked until final, rebroadcast, bumped (docs/design.md,
"Tracking transactions until they are final")."""
