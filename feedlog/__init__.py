"""feedlog: per-author append-only signed feeds, replicated and stitched into group views."""
