"""``plugin-host admin ...``: manage a running broker through its admin API (like vmq-admin).

Every command is one (or two) HTTP requests to the broker's ``listener.http.<name>``; the
output is a readable table, or the API's JSON with ``--json``. Where the broker is and the key:

* ``--url URL`` (default: the first ``http``/``https`` listener of ``--config FILE``, else
  ``http://127.0.0.1:8888``),
* ``--api-key KEY`` or the ``PLUGIN_HOST_API_KEY`` environment variable (default:
  ``admin.api_key`` of ``--config FILE``).

Exit codes: 0 success, 1 the broker could not be reached or refused the request (its message
is printed), 2 bad usage or configuration.
"""

from __future__ import annotations

import json
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from plugin_host.admin.client import DEFAULT_URL, AdminClient, AdminClientError, segment

__all__ = ["admin_group"]

EXIT_FAILED = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class _Target:
    url: str
    api_key: str | None
    cafile: Path | None
    insecure: bool
    timeout: float


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"plugin-host admin: {message}", err=True)
    sys.exit(code)


def _target_from(
    url: str | None,
    api_key: str | None,
    config_file: Path | None,
    cafile: Path | None,
    insecure: bool,
    timeout: float,
) -> _Target:
    if config_file is not None and (url is None or api_key is None):
        from plugin_host.config import load_config
        from plugin_host.settings import ConfigError

        try:
            config = load_config(config_file)
        except ConfigError as exc:
            _fail(str(exc), EXIT_USAGE)
        if url is None:
            for lc in config.listeners:
                if lc.kind in ("http", "https"):
                    host = lc.host or "127.0.0.1"
                    if host in ("0.0.0.0", "*"):
                        host = "127.0.0.1"
                    elif host == "::":
                        host = "::1"
                    if ":" in host:
                        host = f"[{host}]"
                    url = f"{lc.kind}://{host}:{lc.port}"
                    break
        if api_key is None:
            api_key = config.admin_api_key
    return _Target(url or DEFAULT_URL, api_key, cafile, insecure, timeout)


def _run(ctx: click.Context, work: Callable[[AdminClient], Awaitable[Any]]) -> Any:
    """Run ``work`` with a client of the group's target, in a fresh trio run."""
    import trio

    from plugin_host.http import TLSOptions

    target = ctx.obj
    assert isinstance(target, _Target)  # set by admin_group, inherited by its subcommands
    tls: TLSOptions | ssl.SSLContext
    if target.url.lower().startswith("https:"):
        tls = TLSOptions(
            cafile=str(target.cafile) if target.cafile else None,
            verify=not target.insecure,
        )
    else:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # never used; spares loading the CAs

    async def main() -> Any:
        async with AdminClient(
            target.url, target.api_key, tls=tls, timeout=target.timeout
        ) as client:
            return await work(client)

    try:
        return trio.run(main)
    except AdminClientError as exc:
        _fail(str(exc))


def _call(
    ctx: click.Context,
    method: str,
    path: str,
    *,
    query: dict[str, Any] | None = None,
    body: Any = None,
) -> Any:
    async def work(client: AdminClient) -> Any:
        return await client.call(method, path, query=query, body=body)

    return _run(ctx, work)


# --------------------------------------------------------------------------------- output


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value) or "-"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Rows as an aligned text table; ``columns`` are ``(key, header)`` pairs."""
    if not rows:
        return "(none)"
    cells = [[header for _key, header in columns]]
    cells.extend([_cell(row.get(key)) for key, _header in columns] for row in rows)
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for index, line in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _pairs(value: dict[str, Any]) -> str:
    width = max((len(k) for k in value), default=0)
    return "\n".join(f"{k.ljust(width)}  {_cell(v)}" for k, v in value.items())


def _emit(value: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    if as_json:
        click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))
    else:
        click.echo(render(value))


def json_option(function: F) -> F:
    """``--json``: print the API's JSON instead of a table."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print the API's JSON answer instead of a table."
    )(function)


def _plugin_option(default: str) -> Callable[[F], F]:
    return click.option(
        "--plugin",
        default=default,
        show_default=True,
        help="The plugin's name (when installed under another name).",
    )


# --------------------------------------------------------------------------------- the group


@click.group(
    "admin",
    epilog="""\b
Examples:
  plugin-host admin --config broker.toml session show
  plugin-host admin --url http://127.0.0.1:8888 --api-key KEY plugin show
  PLUGIN_HOST_API_KEY=KEY plugin-host admin session disconnect sensor-1 --cleanup
  plugin-host admin webhooks register --hook auth_on_register --endpoint http://127.0.0.1:8000/auth
  plugin-host admin script reload
  plugin-host admin metrics show publishes --json
""",
)
@click.option(
    "--url",
    metavar="URL",
    help=f"The broker's admin listener (default: from --config, else {DEFAULT_URL}).",
)
@click.option(
    "--api-key",
    envvar="PLUGIN_HOST_API_KEY",
    metavar="KEY",
    help="The admin API key (env PLUGIN_HOST_API_KEY; default: admin.api_key of --config).",
)
@click.option(
    "-c",
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="The broker's config file: its http listener and admin.api_key are used.",
)
@click.option(
    "--cafile",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CA bundle that signed the broker's https certificate.",
)
@click.option("--insecure", is_flag=True, help="Do not verify the https certificate.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds per request.")
@click.pass_context
def admin_group(
    ctx: click.Context,
    url: str | None,
    api_key: str | None,
    config_file: Path | None,
    cafile: Path | None,
    insecure: bool,
    timeout: float,
) -> None:
    """Inspect and manage a running broker (sessions, plugins, webhooks, scripts, listeners,
    metrics) through its admin API."""
    ctx.obj = _target_from(url, api_key, config_file, cafile, insecure, timeout)


@admin_group.command("status")
@json_option
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Node name, version, uptime and the main counters."""
    _emit(_call(ctx, "GET", "/api/v1/status"), as_json, _pairs)


@admin_group.command("reload")
@json_option
@click.pass_context
def reload_command(ctx: click.Context, as_json: bool) -> None:
    """Reload TLS certificates and what plugins reload (what SIGHUP does)."""

    def render(value: dict[str, Any]) -> str:
        parts = value.get("reloaded") or {}
        return _pairs({k: json.dumps(v) if isinstance(v, dict) else v for k, v in parts.items()})

    _emit(_call(ctx, "POST", "/api/v1/reload"), as_json, render)


# --------------------------------------------------------------------------------- session

_SESSION_COLUMNS = [
    ("client_id", "client_id"),
    ("mountpoint", "mountpoint"),
    ("username", "user"),
    ("online", "online"),
    ("protocol_level", "protocol"),
    ("peer", "peer"),
    ("subscription_count", "subs"),
    ("queued_messages", "queued"),
    ("inflight_messages", "inflight"),
]


def _session_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        item = dict(row)
        if row.get("peer_addr"):
            item["peer"] = f"{row['peer_addr']}:{row.get('peer_port')}"
        item["subscription_count"] = len(row.get("subscriptions") or ())
        out.append(item)
    return out


@admin_group.group("session")
def session_group() -> None:
    """Client sessions (vmq-admin session ...)."""


@session_group.command("show")
@click.option("--client-id", help="Only this client id.")
@click.option("--mountpoint", help="Only this mountpoint.")
@click.option("--online/--offline", default=None, help="Only online (offline) sessions.")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many rows.")
@json_option
@click.pass_context
def session_show(
    ctx: click.Context,
    client_id: str | None,
    mountpoint: str | None,
    online: bool | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List sessions (online and offline)."""
    rows = _call(
        ctx,
        "GET",
        "/api/v1/sessions",
        query={"client_id": client_id, "mountpoint": mountpoint, "online": online, "limit": limit},
    )
    _emit(rows, as_json, lambda r: table(_session_rows(r), _SESSION_COLUMNS))


@session_group.command("disconnect")
@click.argument("client_id")
@click.option("--mountpoint", default="", help="The session's mountpoint.")
@click.option("--cleanup", is_flag=True, help="Also delete the session (queue, subscriptions).")
@json_option
@click.pass_context
def session_disconnect(
    ctx: click.Context, client_id: str, mountpoint: str, cleanup: bool, as_json: bool
) -> None:
    """Disconnect CLIENT_ID (MQTT 5 clients get DISCONNECT 0x98 administrative action)."""
    result = _call(
        ctx,
        "POST",
        f"/api/v1/sessions/{segment(client_id)}/disconnect",
        body={"mountpoint": mountpoint, "cleanup": cleanup},
    )
    _emit(
        result,
        as_json,
        lambda r: f"disconnected {r['client_id']}" + (" (session deleted)" if r["cleanup"] else ""),
    )


# --------------------------------------------------------------------------------- plugin


@admin_group.group("plugin")
def plugin_group() -> None:
    """Plugins (vmq-admin plugin ...)."""


@plugin_group.command("show")
@json_option
@click.pass_context
def plugin_show(ctx: click.Context, as_json: bool) -> None:
    """The plugins in chain order, with the hooks they implement."""
    rows = _call(ctx, "GET", "/api/v1/plugins")
    columns = [
        ("name", "plugin"),
        ("enabled", "enabled"),
        ("priority", "priority"),
        ("distribution", "distribution"),
        ("version", "version"),
        ("source", "source"),
        ("hooks", "hooks"),
    ]
    _emit(rows, as_json, lambda r: table(r, columns))


# --------------------------------------------------------------------------------- webhooks

_TLS_OPTIONS = (
    "cafile",
    "certfile",
    "keyfile",
    "keyfile_password",
    "tls_version",
    "server_name",
)


def _key_values(args: Iterable[str]) -> dict[str, str]:
    """vmq-admin style ``key=value`` arguments (``hook=auth_on_register``)."""
    out = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise click.UsageError(f"expected key=value, got {arg!r}")
        out[key.strip().lstrip("-").replace("-", "_")] = value
    return out


def _bool_text(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "on", "yes", "1"):
        return True
    if lowered in ("false", "off", "no", "0"):
        return False
    raise click.UsageError(f"{key}: expected true or false, got {value!r}")


@admin_group.group("webhooks")
def webhooks_group() -> None:
    """Webhooks of the webhooks plugin (vmq-admin webhooks ...); changes are not persisted."""


@webhooks_group.command("register")
@click.argument("args", nargs=-1, metavar="[hook=HOOK endpoint=URL ...]")
@click.option("--hook", help="The hook, e.g. auth_on_register.")
@click.option("--endpoint", help="The URL to POST to (http:// or https://).")
@click.option(
    "--base64payload/--no-base64payload", default=None, help="Payloads base64 (default on)."
)
@click.option("--no-payload", "no_payload", flag_value=True, default=None, help="Omit payloads.")
@click.option("--response-timeout", type=click.IntRange(min=1), metavar="MS", help="Default 5000.")
@click.option("--topic-filter", help="Only call for topics matching this filter (publish hooks).")
@click.option("--name", default=None, help="A name for the webhook (shown by `show`).")
@click.option("--cafile", "wh_cafile", help="CA bundle for an https endpoint.")
@click.option("--certfile", help="Client certificate for an https endpoint.")
@click.option("--keyfile", help="Client key for an https endpoint.")
@click.option("--keyfile-password", help="Password of the client key.")
@click.option("--tls-version", help="Minimum TLS version, e.g. tlsv1.2.")
@click.option("--server-name", help="Name to verify the endpoint's certificate against.")
@click.option("--verify-peer/--no-verify-peer", default=None, help="Verify the endpoint.")
@json_option
@click.pass_context
def webhooks_register(
    ctx: click.Context,
    args: tuple[str, ...],
    hook: str | None,
    endpoint: str | None,
    base64payload: bool | None,
    no_payload: bool | None,
    response_timeout: int | None,
    topic_filter: str | None,
    name: str | None,
    wh_cafile: str | None,
    certfile: str | None,
    keyfile: str | None,
    keyfile_password: str | None,
    tls_version: str | None,
    server_name: str | None,
    verify_peer: bool | None,
    as_json: bool,
) -> None:
    """Register an endpoint for a hook (after the ones already registered for it).

    Takes options or vmq-admin's key=value form:
    `webhooks register hook=auth_on_register endpoint=http://127.0.0.1:8000/auth`.
    """
    body: dict[str, Any] = {
        "hook": hook,
        "endpoint": endpoint,
        "base64payload": base64payload,
        "no_payload": no_payload,
        "response_timeout": response_timeout / 1000 if response_timeout else None,
        "topic_filter": topic_filter,
        "name": name,
        "cafile": wh_cafile,
        "certfile": certfile,
        "keyfile": keyfile,
        "keyfile_password": keyfile_password,
        "tls_version": tls_version,
        "server_name": server_name,
        "verify_peer": verify_peer,
    }
    for key, value in _key_values(args).items():
        if key in ("base64payload", "no_payload", "verify_peer", "use_system_cas"):
            body[key] = _bool_text(key, value)
        elif key == "response_timeout":
            if not value.isdigit() or int(value) < 1:
                raise click.UsageError("response_timeout: expected milliseconds (an integer)")
            body[key] = int(value) / 1000
        else:
            body[key] = value
    if not body.get("hook") or not body.get("endpoint"):
        raise click.UsageError("both hook and endpoint are required")
    body = {k: v for k, v in body.items() if v is not None}
    row = _call(ctx, "POST", "/api/v1/webhooks", body=body)
    _emit(row, as_json, lambda r: f"registered {r['endpoint']} for {r['hook']}")


@webhooks_group.command("deregister")
@click.argument("args", nargs=-1, metavar="[hook=HOOK endpoint=URL]")
@click.option("--hook", help="The hook.")
@click.option("--endpoint", help="The registered URL.")
@json_option
@click.pass_context
def webhooks_deregister(
    ctx: click.Context,
    args: tuple[str, ...],
    hook: str | None,
    endpoint: str | None,
    as_json: bool,
) -> None:
    """Remove an endpoint from a hook."""
    given = _key_values(args)
    hook = hook or given.get("hook")
    endpoint = endpoint or given.get("endpoint")
    if not hook or not endpoint:
        raise click.UsageError("both hook and endpoint are required")
    result = _call(ctx, "DELETE", "/api/v1/webhooks", query={"hook": hook, "endpoint": endpoint})
    _emit(result, as_json, lambda r: f"deregistered {r['endpoint']} from {r['hook']}")


@webhooks_group.command("show")
@json_option
@click.pass_context
def webhooks_show(ctx: click.Context, as_json: bool) -> None:
    """Every webhook, by hook then registration order, with its hook's counters."""
    rows = _call(ctx, "GET", "/api/v1/webhooks")

    def render(rows: list[dict[str, Any]]) -> str:
        flat = []
        for row in rows:
            item = dict(row)
            stats = row.get("stats") or {}
            item["requests"] = stats.get("requests", 0)
            item["errors"] = stats.get("errors", 0)
            item["response_timeout_ms"] = int(row["response_timeout"] * 1000)
            flat.append(item)
        columns = [
            ("hook", "hook"),
            ("endpoint", "endpoint"),
            ("base64payload", "base64payload"),
            ("no_payload", "no_payload"),
            ("response_timeout_ms", "response_timeout"),
            ("topic_filter", "topic_filter"),
            ("requests", "requests"),
            ("errors", "errors"),
        ]
        return table(flat, columns)

    _emit(rows, as_json, render)


@webhooks_group.group("cache")
def webhooks_cache_group() -> None:
    """The webhooks response cache."""


@webhooks_cache_group.command("show")
@click.option("--reset", is_flag=True, help="Zero the hit and miss counters after showing them.")
@json_option
@click.pass_context
def webhooks_cache_show(ctx: click.Context, reset: bool, as_json: bool) -> None:
    """Hits, misses and entries per endpoint and hook."""
    rows = _call(ctx, "GET", "/api/v1/webhooks/cache", query={"reset": reset or None})
    columns = [
        ("endpoint", "endpoint"),
        ("hook", "hook"),
        ("hits", "hits"),
        ("misses", "misses"),
        ("entries", "entries"),
    ]
    _emit(rows, as_json, lambda r: table(r, columns))


@webhooks_cache_group.command("clear")
@json_option
@click.pass_context
def webhooks_cache_clear(ctx: click.Context, as_json: bool) -> None:
    """Drop every cached response."""
    _emit(_call(ctx, "DELETE", "/api/v1/webhooks/cache"), as_json, lambda _r: "cache cleared")


# --------------------------------------------------------------------------------- script


@admin_group.group("script")
def script_group() -> None:
    """Lua scripts of the diversity plugin (vmq-admin script ...)."""


@script_group.command("show")
@_plugin_option("diversity")
@json_option
@click.pass_context
def script_show(ctx: click.Context, plugin: str, as_json: bool) -> None:
    """Loaded scripts with calls, errors and average call time per hook."""
    rows = _call(ctx, "GET", "/api/v1/scripts", query={"plugin": plugin})

    def render(rows: list[dict[str, Any]]) -> str:
        flat = []
        for script in rows:
            hooks = script.get("hooks") or [{"hook": None}]
            for hook in hooks:
                flat.append({"script": script["name"], "path": script["path"], **hook})
        columns = [
            ("script", "script"),
            ("hook", "hook"),
            ("calls", "calls"),
            ("errors", "errors"),
            ("avg_ms", "avg_ms"),
            ("path", "path"),
        ]
        return table(flat, columns)

    _emit(rows, as_json, render)


@script_group.command("reload")
@_plugin_option("diversity")
@json_option
@click.pass_context
def script_reload(ctx: click.Context, plugin: str, as_json: bool) -> None:
    """Reload every script; one that fails to load keeps its previous version."""
    result = _call(ctx, "POST", "/api/v1/scripts/reload", query={"plugin": plugin})

    def render(value: dict[str, Any]) -> str:
        return _pairs(value.get("scripts") or {}) or "(no scripts)"

    _emit(result, as_json, render)


# --------------------------------------------------------------------------------- listener

_LISTENER_COLUMNS = [
    ("id", "listener"),
    ("type", "type"),
    ("state", "state"),
    ("addresses", "address"),
    ("connections", "connections"),
    ("max_connections", "max_connections"),
    ("mountpoint", "mountpoint"),
]


@admin_group.group("listener")
def listener_group() -> None:
    """Listeners (vmq-admin listener ...)."""


@listener_group.command("show")
@json_option
@click.pass_context
def listener_show(ctx: click.Context, as_json: bool) -> None:
    """Every listener with its state and open connections."""
    rows = _call(ctx, "GET", "/api/v1/listeners")
    _emit(rows, as_json, lambda r: table(r, _LISTENER_COLUMNS))


@listener_group.command("stop")
@click.argument("listener")
@click.option("--kill-sessions", is_flag=True, help="Also disconnect the listener's clients.")
@json_option
@click.pass_context
def listener_stop(ctx: click.Context, listener: str, kill_sessions: bool, as_json: bool) -> None:
    """Stop accepting on LISTENER (kind.name, name or host:port); other listeners are untouched."""
    row = _call(
        ctx,
        "POST",
        f"/api/v1/listeners/{segment(listener)}/stop",
        body={"kill_sessions": kill_sessions},
    )
    _emit(row, as_json, lambda r: f"{r['id']}: {r['state']}")


@listener_group.command("start")
@click.argument("listener")
@json_option
@click.pass_context
def listener_start(ctx: click.Context, listener: str, as_json: bool) -> None:
    """Start accepting again on LISTENER."""
    row = _call(ctx, "POST", f"/api/v1/listeners/{segment(listener)}/start")
    _emit(row, as_json, lambda r: f"{r['id']}: {r['state']}")


# --------------------------------------------------------------------------------- metrics


@admin_group.group("metrics")
def metrics_group() -> None:
    """Metrics (the broker's GET /metrics)."""


@metrics_group.command("show")
@click.argument("pattern", required=False)
@json_option
@click.pass_context
def metrics_show(ctx: click.Context, pattern: str | None, as_json: bool) -> None:
    """Every metric sample (those whose name contains PATTERN)."""
    from prometheus_client.parser import text_string_to_metric_families

    async def work(client: AdminClient) -> str:
        return await client.text("/metrics")

    text = _run(ctx, work)
    rows = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if pattern and pattern not in sample.name:
                continue
            rows.append({"name": sample.name, "labels": dict(sample.labels), "value": sample.value})

    def render(rows: list[dict[str, Any]]) -> str:
        flat = [
            {
                "name": r["name"],
                "labels": ",".join(f"{k}={v}" for k, v in r["labels"].items()),
                "value": r["value"],
            }
            for r in rows
        ]
        return table(flat, [("name", "metric"), ("labels", "labels"), ("value", "value")])

    _emit(rows, as_json, render)
