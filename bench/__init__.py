"""Benchmarks that print Markdown tables (not tests): ``python -m bench.<name> --help``."""
