"""The diversity plugin for plugin-host."""

__version__ = "0.1.0"
