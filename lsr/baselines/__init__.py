"""Reference systems that our engine is measured against."""
