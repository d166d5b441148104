"""Machinery shared by every competition: atomic I/O, stage caching, CV engine, blending,
submission checks, Kaggle I/O, run records and the comparison report."""
