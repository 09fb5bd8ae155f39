"""The lsr HTTP service: FastAPI over live collections (``service.app``, ``lsr serve``)."""
