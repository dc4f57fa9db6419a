"""hub: a self-hosted, event-driven notification hub on Celery and Redis."""

__version__ = "0.1.0"
