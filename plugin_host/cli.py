"""The ``plugin-host`` command.

Exit codes: 0 success (also after a graceful Ctrl-C/SIGTERM shutdown), 1 the broker failed at
run time (e.g. a port already in use), 2 bad configuration or command-line usage, 3 the message
store cannot be used (corrupt, written by a newer version, locked by another broker), 130 stopped
by Ctrl-C before the broker could shut down gracefully (e.g. during start-up).

Subcommands owned by other parts of the package are registered lazily in :data:`LAZY_COMMANDS`
(module, attribute, one-line help), so ``plugin-host serve`` does not import them and a missing
module does not break the CLI. A later ``admin`` group plugs in the same way.
"""

from __future__ import annotations

import errno
import importlib
import sys
from pathlib import Path
from typing import NoReturn

import click

import plugin_host
from plugin_host.config import (
    ConfigOverrides,
    check_plugin_chains,
    load_config,
    log_warnings,
    render_config,
)
from plugin_host.logging import configure_logging
from plugin_host.settings import Config, ConfigError, Key

EXIT_RUNTIME_ERROR = 1
EXIT_CONFIG_ERROR = 2
EXIT_STORE_ERROR = 3
EXIT_INTERRUPTED = 130

#: name -> (module, attribute, short help shown while the module is not installed)
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "plugins": (
        "plugin_host.plugins.commands",
        "plugins_command",
        "List the discovered plugins and the hooks they implement.",
    ),
    "passwd": (
        "plugin_host.plugins.commands",
        "passwd_group",
        "Add or delete users in a password file (vmq-passwd compatible).",
    ),
    "admin": (
        "plugin_host.admin.commands",
        "admin_group",
        "Inspect and manage a running broker.",
    ),
}

MAIN_HELP = """\
plugin-host: an MQTT 3.1 / 3.1.1 / 5.0 broker where every decision (authentication,
authorisation, message rewriting) is a plugin hook, compatible with VerneMQ's webhooks and
Lua plugins.

\b
Examples:
  plugin-host serve                          local broker on 127.0.0.1:1883, anonymous
                                             clients allowed (for development)
  plugin-host serve --config vernemq.conf    use an existing VerneMQ configuration
  plugin-host serve -c broker.toml --listen 0.0.0.0:1883
  plugin-host check-config broker.toml       validate a config file, print the result
  plugin-host plugins                        which plugins are installed and enabled

Run "plugin-host COMMAND --help" for the options of a command.
"""


class _LazyGroup(click.Group):
    """A group whose subcommands in :data:`LAZY_COMMANDS` are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names.update(name for name in LAZY_COMMANDS if self._load(name) is not None)
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in LAZY_COMMANDS:
            return command
        return self._load(cmd_name) or self._unavailable(cmd_name)

    @staticmethod
    def _load(name: str) -> click.Command | None:
        module_name, attribute, _help = LAZY_COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only "that module is not there (yet)" is tolerated; an import error *inside* it
            # is a bug and must show.
            if exc.name is not None and module_name.startswith(exc.name):
                return None
            raise
        command = getattr(module, attribute, None)
        return command if isinstance(command, click.Command) else None

    @staticmethod
    def _unavailable(name: str) -> click.Command:
        module_name, _attribute, short_help = LAZY_COMMANDS[name]

        def explain() -> NoReturn:
            raise click.ClickException(
                f"'plugin-host {name}' is not available in this installation "
                f"({module_name} is missing)"
            )

        return click.Command(name, callback=explain, help=short_help, hidden=True)


@click.group(cls=_LazyGroup, help=MAIN_HELP, context_settings={"max_content_width": 100})
@click.version_option(plugin_host.__version__, prog_name="plugin-host")
def main() -> None:
    """The ``plugin-host`` command group (see MAIN_HELP)."""


def _config_error_exit(exc: ConfigError) -> NoReturn:
    click.echo(str(exc), err=True)
    sys.exit(EXIT_CONFIG_ERROR)


@main.command(
    epilog="""\b
Examples:
  plugin-host serve
  plugin-host serve --config /etc/vernemq/vernemq.conf
  plugin-host serve -c broker.toml --listen 0.0.0.0:1883 --listen [::]:1883
  plugin-host serve --plugins-dir ./my_plugins --log-level debug
"""
)
@click.option(
    "-c",
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="A .toml file or a vernemq.conf-style .conf file. Without it: a local development "
    "broker on 127.0.0.1:1883 that allows anonymous clients.",
)
@click.option(
    "--listen",
    multiple=True,
    metavar="HOST:PORT",
    help="Serve MQTT over TCP on this address (repeatable; port 0 picks a free port). "
    "Replaces the config's listener.tcp.* listeners; TLS and WebSocket listeners stay.",
)
@click.option(
    "--allow-anonymous/--no-allow-anonymous",
    default=None,
    help="Accept clients that no plugin authenticates (default: off with a config file, "
    "on without one).",
)
@click.option(
    "--plugins-dir",
    "plugins_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Load every DIR/*.py as a plugin named after the file (repeatable).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error", "critical"], case_sensitive=False),
    help="Default: log.level from the config, else info.",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    help="auto (the default): readable on a terminal, JSON lines otherwise.",
)
@click.option(
    "--discard-store",
    is_flag=True,
    help="If the message store (persistence.dir) is corrupt or was written by a newer version, "
    "move it aside (logged) and start empty instead of refusing to start.",
)
def serve(
    config_file: Path | None,
    listen: tuple[str, ...],
    allow_anonymous: bool | None,
    plugins_dirs: tuple[Path, ...],
    log_level: str | None,
    log_format: str | None,
    discard_store: bool,
) -> None:
    """Run the broker until Ctrl-C or SIGTERM (then shut down gracefully)."""
    overrides = ConfigOverrides(
        listen=listen,
        allow_anonymous=allow_anonymous,
        plugins_dirs=plugins_dirs,
        log_level=log_level,
        log_format=log_format,
    )
    try:
        try:
            config = load_config(config_file, overrides=overrides)
        except ConfigError as exc:
            _config_error_exit(exc)
        configure_logging(config.log.level, config.log.format, cache_loggers=True)
        log_warnings(config)
        if discard_store:
            config.persistence.discard_unreadable = True
        code = _run_server(config)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _run_server(config: Config) -> int:
    """``trio.run(plugin_host.server.serve, config)``, turning expected failures into one line."""
    import structlog
    import trio

    from plugin_host import server
    from plugin_host.store import StoreError

    log = structlog.get_logger(__name__)

    async def serve_tuned() -> None:
        # The broker is this process: once started, tune the collector for it (gc_tuning).
        from plugin_host.gc_tuning import tune_after_start

        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, config)
            log.info("gc_tuned", **tune_after_start())

    try:
        trio.run(serve_tuned)
    except BaseException as exc:
        leaves = _leaves(exc)
        if all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            log.info("stopped", reason="interrupted")
            return EXIT_INTERRUPTED
        store_errors = [leaf for leaf in leaves if isinstance(leaf, StoreError)]
        if store_errors:
            # Never start empty by accident: say what is wrong and how to go on.
            for error in store_errors:
                hint = (
                    " (start with --discard-store to move it aside and start empty)"
                    if error.discardable
                    else ""
                )
                click.echo(f"plugin-host: {error}{hint}", err=True)
            return EXIT_STORE_ERROR
        expected = [leaf for leaf in leaves if isinstance(leaf, ConfigError | OSError)]
        if expected and all(
            isinstance(leaf, ConfigError | OSError | KeyboardInterrupt | trio.Cancelled)
            for leaf in leaves
        ):
            # A plugin section rejected at start-up is bad configuration (exit 2, printed like
            # any config error); a ConfigError caused by an OSError (a port in use) is not.
            config_errors = [
                leaf
                for leaf in expected
                if isinstance(leaf, ConfigError) and not isinstance(leaf.__cause__, OSError)
            ]
            for config_error in config_errors:
                click.echo(str(config_error), err=True)
            for failure in expected:
                if failure not in config_errors:
                    click.echo(f"plugin-host: {_describe(failure)}", err=True)
            return EXIT_CONFIG_ERROR if config_errors else EXIT_RUNTIME_ERROR
        log.critical("server_crashed", exc_info=exc)
        return EXIT_RUNTIME_ERROR
    return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, ConfigError):
        if exc.errno == errno.EADDRINUSE:
            return f"address already in use: {exc}"
        return str(exc.strerror or exc)
    return str(exc)


@main.command(
    "check-config",
    epilog="""\b
Examples:
  plugin-host check-config broker.toml
  plugin-host check-config /etc/vernemq/vernemq.conf > effective.conf
""",
)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--plugins-dir",
    "plugins_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Also load every DIR/*.py as a plugin (repeatable), as `serve` would.",
)
def check_config(file: Path, plugins_dirs: tuple[Path, ...]) -> None:
    """Validate FILE and print the effective configuration (secrets as ***).

    The enabled plugins are loaded as `serve` would load them, so their own sections
    (webhooks.*, diversity.*, ...) are checked too. Exit code 0 when FILE is valid, 2 (with
    "file:line: key: reason" on stderr) when not. Keys that are accepted but ignored are listed
    on stderr as warnings.
    """
    try:
        config = load_config(file, overrides=ConfigOverrides(plugins_dirs=plugins_dirs))
        for warning in config.warnings:
            click.echo(f"warning: {warning}", err=True)
        configure_logging("warning", "auto")  # plugin problems on stderr, config on stdout
        schemas = _plugin_schemas(config)
    except ConfigError as exc:
        _config_error_exit(exc)
    click.echo(render_config(config, schemas=schemas), nl=False)


def _plugin_schemas(config: Config) -> dict[str, list[Key]] | None:
    """Load the enabled plugins as ``serve`` does (validating their sections against their
    schemas) and return those schemas; None when the plugin system is not installed."""
    try:
        from plugin_host.plugins.manager import PluginManager
    except ModuleNotFoundError as exc:
        if exc.name is not None and "plugin_host.plugins.manager".startswith(exc.name):
            return None
        raise
    manager = PluginManager.discover(config)
    check_plugin_chains(config.listeners, manager.names)
    return manager.schemas()
