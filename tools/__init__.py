"""Thin Typer CLIs over nanecho_core, installed as the package `nanecho_tools`."""
