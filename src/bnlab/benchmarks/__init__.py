"""Benchmark rows that ``bnlab bench`` collects (each module exposes ``rows(quick) -> list[dict]``)."""
