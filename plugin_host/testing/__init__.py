"""Helpers for testing plugins and the broker itself: a public API for plugin authors."""
