"""mlops_core: the library of the continuous-training system.

Plain Python over pandas, Evidently, MLflow and SQLAlchemy; no Prefect or Streamlit imports and
no work at import time. Import the module you need (``mlops_core.data.ingest``,
``mlops_core.config``).
"""

__version__ = "0.1.0"
