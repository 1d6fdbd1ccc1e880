"""The commands of `mlops`, by area; `mlops_cli.app` registers them."""
