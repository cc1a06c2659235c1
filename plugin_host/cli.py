"""The ``plugin-host`` command."""

import click

import plugin_host


@click.group()
@click.version_option(plugin_host.__version__, prog_name="plugin-host")
def main() -> None:
    """plugin-host: an MQTT broker whose every decision is a plugin hook."""
