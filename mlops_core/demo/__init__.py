"""The demo: a seeded stream and its replay through the real deployments."""
