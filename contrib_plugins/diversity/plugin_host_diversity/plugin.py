"""Entry point module of the diversity plugin (hookimpls are added as the plugin is built)."""
