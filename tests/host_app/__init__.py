"""A separate Celery application that reports its failures to a hub (see its tests)."""
