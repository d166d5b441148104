"""Kaggle solution pipelines: Quora Question Pairs and Intel & MobileODT Cervical Cancer Screening."""
from pipelines import config as _config  # noqa: F401  (sets KERAS_HOME before anything imports keras)

__version__ = "0.1.0"
