"""Stage 3-4: the training window, fitting and search, metrics and the promotion gate, online
learning."""
