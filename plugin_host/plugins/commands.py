"""``plugin-host plugins`` and ``plugin-host passwd`` (registered lazily by ``plugin_host.cli``).

Exit codes follow the CLI: 0 success, 1 an operation failed (unknown user, unwritable file),
2 bad configuration or usage.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import click

from plugin_host.settings import ConfigError

EXIT_FAILED = 1
EXIT_CONFIG_ERROR = 2


def _config_error(exc: ConfigError) -> NoReturn:
    click.echo(str(exc), err=True)
    sys.exit(EXIT_CONFIG_ERROR)


# --------------------------------------------------------------------------------------------
# plugin-host plugins
# --------------------------------------------------------------------------------------------


def format_table(rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces (the last column is not padded)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


@click.command(
    "plugins",
    epilog="""\b
Examples:
  plugin-host plugins
  plugin-host plugins --config /etc/vernemq/vernemq.conf
  plugin-host plugins --plugins-dir ./my_plugins
""",
)
@click.option(
    "-c",
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="The broker's config (.toml or .conf): enabled plugins, priorities, --plugins-dir.",
)
@click.option(
    "--plugins-dir",
    "plugins_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Also load every DIR/*.py as a plugin (repeatable), as `serve` would.",
)
def plugins_command(config_file: Path | None, plugins_dirs: tuple[Path, ...]) -> None:
    """List the discovered plugins: name, distribution, version, enabled, priority and the hooks
    each implements, enabled plugins first in chain order.

    Enabled plugins are imported (as `serve` would); a plugin that fails to import or register
    is reported with exit code 2.
    """
    from plugin_host.config import ConfigOverrides, load_config
    from plugin_host.logging import configure_logging
    from plugin_host.plugins.manager import PluginManager

    try:
        config = load_config(config_file, overrides=ConfigOverrides(plugins_dirs=plugins_dirs))
        # Only problems (ignored config of disabled plugins...) on stderr; the table on stdout.
        configure_logging("warning", config.log.format)
        manager = PluginManager.discover(config)
    except ConfigError as exc:
        _config_error(exc)
    rows = [["NAME", "DISTRIBUTION", "VERSION", "ENABLED", "PRIORITY", "HOOKS"]]
    for row in manager.table():
        rows.append(
            [
                row.name,
                row.distribution if row.source != "plugins dir" else f"(file) {row.distribution}",
                row.version or "-",
                "yes" if row.enabled else "no",
                "-" if row.priority is None else str(row.priority),
                ", ".join(row.hooks) if row.enabled else "(not loaded)",
            ]
        )
    click.echo(format_table(rows))


# --------------------------------------------------------------------------------------------
# plugin-host passwd
# --------------------------------------------------------------------------------------------


def _check_user(user: str) -> None:
    if not user or ":" in user or any(ch in user for ch in "\r\n") or user != user.strip():
        raise click.BadParameter(
            "must be non-empty, without ':', line breaks or surrounding spaces", param_hint="USER"
        )


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None


def _user_of(line: str) -> str | None:
    stripped = line.strip()
    if not stripped or stripped.startswith("#") or ":" not in stripped:
        return None
    return stripped.partition(":")[0]


def _write_atomically(path: Path, lines: list[str]) -> None:
    """Replace ``path`` in one step (a reloading broker never sees half a file); a new file
    is created readable by its owner only, an existing one keeps its permissions."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write("".join(f"{line}\n" for line in lines))
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}") from None


@click.group(
    "passwd",
    epilog="""\b
Examples:
  plugin-host passwd add /etc/plugin-host/passwd alice
  plugin-host passwd add passwd.txt bob --password s3cret
  plugin-host passwd delete passwd.txt bob

The broker reads the file with `passwd.password_file = FILE` and picks up changes by itself.
""",
)
def passwd_group() -> None:
    """Manage a password file of user:bcrypt-hash lines (the passwd plugin's format)."""


@passwd_group.command("add")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("user")
@click.option(
    "--password",
    help="The password (default: asked twice without echo). Beware: visible in shell history.",
)
@click.option(
    "--rounds", default=12, show_default=True, type=click.IntRange(4, 31), help="bcrypt cost."
)
def passwd_add(file: Path, user: str, password: str | None, rounds: int) -> None:
    """Add USER to FILE or change their password (FILE is created if missing)."""
    from plugin_host.plugins.builtin.passwd import hash_password

    _check_user(user)
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.BadParameter("must not be empty", param_hint="password")
    try:
        hashed = hash_password(password.encode("utf-8"), rounds)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="password") from None
    lines = _read_lines(file)
    entry = f"{user}:{hashed}"
    replaced = False
    out = []
    for line in lines:
        if _user_of(line) == user:
            if not replaced:
                out.append(entry)
                replaced = True
            continue  # drop duplicates of the same user
        out.append(line)
    if not replaced:
        out.append(entry)
    _write_atomically(file, out)
    click.echo(f"{'updated' if replaced else 'added'} {user} in {file}")


@passwd_group.command("delete")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("user")
def passwd_delete(file: Path, user: str) -> None:
    """Remove USER from FILE (exit code 1 when USER is not there)."""
    if not file.exists():
        raise click.ClickException(f"{file} does not exist")
    lines = _read_lines(file)
    out = [line for line in lines if _user_of(line) != user]
    if len(out) == len(lines):
        raise click.ClickException(f"no user {user!r} in {file}")
    _write_atomically(file, out)
    click.echo(f"deleted {user} from {file}")
