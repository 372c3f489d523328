"""Reliability and security suite: crash, corruption, races and hostile input (see docs/reliability.md)."""
