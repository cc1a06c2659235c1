"""Entry point module of the webhooks plugin (hookimpls are added as the plugin is built)."""
