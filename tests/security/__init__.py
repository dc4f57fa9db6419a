"""Hostile input and access: every case gets a clear 4xx or a clear failure, and the hub keeps serving."""
