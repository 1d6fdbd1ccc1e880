"""The `mlops` command line: an entry point over mlops_core and flows."""
