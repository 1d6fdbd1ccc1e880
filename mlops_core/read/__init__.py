"""Read models for the dashboard and the CLI: nothing here writes."""
