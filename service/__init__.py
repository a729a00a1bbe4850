"""clustviz's HTTP service (FastAPI). ``create_app()`` builds it; ``python -m service`` runs it."""

from service.app import create_app

__all__ = ["create_app"]
