"""Hostile input and access: each case gets a clear 4xx or failure; the hub keeps serving."""
