"""Stage 1-2: ingest, batch and validate new data."""
