"""The training kit: components that plug into sentence-transformers' sparse stack (issue #8)."""
