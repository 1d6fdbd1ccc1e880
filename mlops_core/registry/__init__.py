"""Stage 5-6: versions, aliases and the promotion decision (MLflow behind one adapter)."""
