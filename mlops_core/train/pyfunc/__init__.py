"""The MLflow model code (``tabular_model.py``), logged as a file: "models from code"."""
