"""Replaying a history to compare when to retrain."""
