"""JSON Schemas shared by every NanEcho tool (installed as package data)."""
