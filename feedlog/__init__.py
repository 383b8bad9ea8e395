"""feedlog: per-author append-only signed logs and their replication."""
