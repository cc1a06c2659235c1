"""The plugin API: hook specifications, result normalisation, the chain runner."""
