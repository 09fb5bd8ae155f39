"""Live collections: segments, write buffer, write-ahead log, metadata filters."""
