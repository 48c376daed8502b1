"""The distribution's version: read by the build (statically) and sent as User-Agent."""

__version__ = "0.1.0"
