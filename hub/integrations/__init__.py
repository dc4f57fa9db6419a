"""Integrations for applications that are not a hub: they import nothing else from hub."""
