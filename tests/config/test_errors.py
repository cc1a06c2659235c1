"""Every configuration error reads exactly ``file:line: key: reason``."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin_host.config import ConfigOverrides, load_config
from plugin_host.settings import ConfigError


def test_unknown_key(config_error, tmp_path: Path) -> None:
    message = config_error("u.conf", "allow_anonymous = on\nmax_inflight_mesages = 10\n")
    assert message == (
        f"{tmp_path / 'u.conf'}:2: max_inflight_mesages: "
        "unknown key (did you mean max_inflight_messages?)"
    )


def test_unknown_key_without_suggestion(config_error, tmp_path: Path) -> None:
    assert config_error("u.conf", "# c\n\nfrobnicate = 1\n") == (
        f"{tmp_path / 'u.conf'}:3: frobnicate: unknown key"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "max_inflight_messages = lots",
            "max_inflight_messages: bad value 'lots': expected an integer",
        ),
        ("allow_anonymous = maybe", "allow_anonymous: bad value 'maybe': expected on or off"),
        (
            "receive_max_broker = 0",
            "receive_max_broker: bad value '0': must be between 1 and 65535",
        ),
        ("max_offline_messages = -2", "max_offline_messages: bad value '-2': must be at least -1"),
        (
            "retry_interval = soon",
            "retry_interval: bad value 'soon': expected a duration: a number of s, "
            "or with a unit like 500ms, 5s, 2m",
        ),
        (
            "max_message_size = 1TB",
            "max_message_size: bad value '1TB': expected a size in bytes, e.g. 65536, 64KB or 4MB",
        ),
        (
            "shared_subscription_policy = nearest",
            "shared_subscription_policy: bad value 'nearest': expected one of prefer_local, "
            "local_only, prefer_online_before_local, round_robin, random",
        ),
        (
            "persistent_client_expiration = 3q",
            "persistent_client_expiration: bad value '3q': expected 'never' or a number "
            "followed by s, h, d, w, m (month) or y, e.g. 1w",
        ),
        (
            "persistence.sync = sometimes",
            "persistence.sync: bad value 'sometimes': expected one of batch, always, off",
        ),
        (
            "plugins.webhooks = yes please",
            "plugins.webhooks: bad value 'yes please': expected on or off",
        ),
        (
            "plugins.vmq_webhooks.priority = high",
            "plugins.vmq_webhooks.priority: bad value 'high': expected an integer",
        ),
        (
            "plugins.webhooks.on_error = ignore",
            "plugins.webhooks.on_error: bad value 'ignore': expected one of deny, next",
        ),
        (
            "log.level = loud",
            "log.level: bad value 'loud': expected one of debug, info, warning, error, critical",
        ),
        ("nodename = ", "nodename: bad value '': must not be empty"),
    ],
)
def test_bad_value(config_error, tmp_path: Path, line: str, message: str) -> None:
    assert (
        config_error("b.conf", f"# first line\n{line}\n") == f"{tmp_path / 'b.conf'}:2: {message}"
    )


def test_bad_value_toml_types(config_error, tmp_path: Path) -> None:
    path = tmp_path / "b.toml"
    assert config_error("b.toml", "max_inflight_messages = true\n") == (
        f"{path}:1: max_inflight_messages: bad value true: expected an integer"
    )
    assert config_error("b.toml", "allow_anonymous = 1\n") == (
        f"{path}:1: allow_anonymous: bad value 1: expected on or off"
    )


def test_duplicate_key(config_error, tmp_path: Path) -> None:
    assert config_error("d.conf", "retry_interval = 10\n\nretry_interval = 20\n") == (
        f"{tmp_path / 'd.conf'}:3: retry_interval: duplicate key (already set on line 1)"
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("vmq_webhooks.w1.hook = auth_on_register", "webhooks.w1.hook = auth_on_publish"),
        ("plugins.vmq_diversity = on", "plugins.diversity = off"),
        ("vmq_passwd.password_file = a", "passwd.password_file = b"),
        ("acl.acl_file = a", "vmq_acl.acl_file = b"),
        ("listener.tcp.x = 127.0.0.1:0", "listener.tcp.x.address = 127.0.0.1:1"),
        ("log.level = info", "log.console.level = debug"),
    ],
)
def test_duplicate_through_alias(config_error, tmp_path: Path, first: str, second: str) -> None:
    first_key = first.split(" =", maxsplit=1)[0]
    second_key = second.split(" =", maxsplit=1)[0]
    assert config_error("a.conf", f"{first}\n{second}\n") == (
        f"{tmp_path / 'a.conf'}:2: {second_key}: "
        f"duplicate key (already set on line 1 as {first_key})"
    )


def test_duplicate_in_toml_across_aliases(config_error, tmp_path: Path) -> None:
    text = '[webhooks.w1]\nhook = "a"\n\n[vmq_webhooks.w1]\nhook = "b"\n'
    assert config_error("a.toml", text) == (
        f"{tmp_path / 'a.toml'}:5: vmq_webhooks.w1.hook: "
        "duplicate key (already set on line 2 as webhooks.w1.hook)"
    )


def test_toml_duplicates_found_by_tomllib(config_error, tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    assert config_error("d.toml", "a = 1\nb = 2\na = 3\n") == (
        f"{path}:3: a: duplicate key (already set on line 1)"
    )
    assert config_error("d.toml", '[webhooks.w]\nhook = "x"\n\n[webhooks.w]\nendpoint = "y"\n') == (
        f"{path}:4: webhooks.w: duplicate table (already set on line 1)"
    )
    assert config_error("d.toml", '[webhooks]\nw.hook = "x"\nw.hook = "y"\n') == (
        f"{path}:3: webhooks.w.hook: duplicate key (already set on line 2)"
    )


def test_toml_syntax_error(config_error, tmp_path: Path) -> None:
    assert config_error("s.toml", "allow_anonymous = true\nretry_interval = \n") == (
        f"{tmp_path / 's.toml'}:2: retry_interval: TOML syntax error: Invalid value"
    )
    message = config_error("s.toml", "[listener\n")
    assert message.startswith(f"{tmp_path / 's.toml'}:1: ")
    assert "TOML syntax error: Expected ']'" in message


def test_toml_arrays_of_tables_are_rejected(config_error, tmp_path: Path) -> None:
    assert config_error("a.toml", '[[webhooks]]\nhook = "x"\n') == (
        f"{tmp_path / 'a.toml'}:1: webhooks: "
        "arrays of tables are not supported: use named tables ([a.name])"
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            "listener.tcp.default = 1883",
            "bad listener address '1883': expected IP:PORT, e.g. 127.0.0.1:1883, 0.0.0.0:1883 "
            "or [::1]:1883",
        ),
        (
            "listener.tcp.default = ::1:1883",
            "bad listener address '::1:1883': write IPv6 addresses in brackets, e.g. [::1]:1883",
        ),
        (
            "listener.tcp.default = 127.0.0.1:70000",
            "bad listener address '127.0.0.1:70000': port must be 0..65535",
        ),
    ],
)
def test_bad_listener_address(config_error, tmp_path: Path, line: str, reason: str) -> None:
    assert (
        config_error("l.conf", f"{line}\n")
        == f"{tmp_path / 'l.conf'}:1: listener.tcp.default: {reason}"
    )


def test_listener_errors(config_error, tmp_path: Path) -> None:
    path = tmp_path / "l.conf"
    assert config_error("l.conf", "listener.tcp.x.mountpoint = m\n") == (
        f"{path}:1: listener.tcp.x.mountpoint: no listener tcp.x is declared "
        "(add listener.tcp.x = ip:port)"
    )
    assert config_error("l.conf", "listener.tcp.certfile = c.pem\n") == (
        f"{path}:1: listener.tcp.certfile: option certfile does not apply to tcp listeners"
    )
    assert config_error(
        "l.conf", "listener.tcp.a = 127.0.0.1:0\nlistener.tcp.a.colour = red\n"
    ) == (f"{path}:2: listener.tcp.a.colour: unknown listener option")
    assert config_error("l.conf", "listener.udp.a = 127.0.0.1:0\n") == (
        f"{path}:1: listener.udp.a: unknown listener kind or option 'udp' "
        "(kinds: tcp, ssl, ws, wss, http, https)"
    )
    assert config_error("l.conf", "listener.ssl.a = 127.0.0.1:0\n") == (
        f"{path}:1: listener.ssl.a: a ssl listener needs certfile and keyfile "
        "(listener.ssl.a.certfile or listener.ssl.certfile, and the same for keyfile)"
    )
    assert config_error("l.conf", "listener.ssl.certfile = missing.pem\n") == (
        f"{path}:1: listener.ssl.certfile: bad value 'missing.pem': "
        f"file not found: {tmp_path / 'missing.pem'}"
    )
    text = "listener.tcp.a = 0.0.0.0:1883\nlistener.ws.b = 0.0.0.0:1883\n"
    assert config_error("l.conf", text) == (
        f"{path}:2: listener.ws.b: address 0.0.0.0:1883 is already used by listener tcp.a (line 1)"
    )
    assert config_error("l.conf", "listener.tcp.a.allowed_protocol_versions = 3,6\n").startswith(
        f"{path}:1: listener.tcp.a.allowed_protocol_versions: bad value '3,6': expected a list"
    )


def test_plugin_option_errors(config_error, tmp_path: Path) -> None:
    assert config_error("p.conf", "plugins.webhooks.colour = red\n") == (
        f"{tmp_path / 'p.conf'}:1: plugins.webhooks.colour: unknown plugin option "
        "(expected plugins.<name> = on|off, or plugins.<name>.priority, .on_error, .path)"
    )


def test_reserved_roots_are_not_plugin_sections(config_error, tmp_path: Path) -> None:
    assert config_error("r.conf", "admin.password = x\n") == (
        f"{tmp_path / 'r.conf'}:1: admin.password: unknown key"
    )
    assert config_error("r.conf", "persistence.path = x\n") == (
        f"{tmp_path / 'r.conf'}:1: persistence.path: unknown key (did you mean persistence.dir?)"
    )
    assert (
        config_error("r.conf", "listener = x\n")
        == f"{tmp_path / 'r.conf'}:1: listener: unknown key"
    )


def test_syntax_errors_in_conf(config_error, tmp_path: Path) -> None:
    path = tmp_path / "s.conf"
    assert config_error("s.conf", "allow_anonymous on\n") == f"{path}:1: expected 'key = value'"
    assert config_error("s.conf", "bad key! = 1\n") == (
        f"{path}:1: bad key!: invalid key (letters, digits, _ and - separated by dots)"
    )
    assert (
        config_error("s.conf", 'nodename = "open\n')
        == f"{path}:1: nodename: unterminated quoted value"
    )


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.conf")
    assert str(info.value) == (
        f"{tmp_path / 'missing.conf'}: cannot read config file: No such file or directory"
    )
    yaml = tmp_path / "broker.yaml"
    yaml.write_text("a: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(yaml)
    assert str(info.value) == (
        f"{yaml}: unsupported config file type '.yaml': use a .toml or .conf file"
    )
    binary = tmp_path / "bin.conf"
    binary.write_bytes(b"nodename = \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(binary)


def test_bad_listen_override() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides=ConfigOverrides(listen=["localhost"]))
    assert str(info.value).startswith("--listen: bad listener address 'localhost'")
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides=ConfigOverrides(listen=["127.0.0.1:1", "127.0.0.1:1"]))
    assert str(info.value) == (
        "--listen: address 127.0.0.1:1 is already used by listener tcp.listen1 (the command line)"
    )


def test_a_bad_secret_value_is_not_echoed(config_error, tmp_path: Path) -> None:
    assert config_error("s.toml", "admin.api_key = true\n") == (
        f"{tmp_path / 's.toml'}:1: admin.api_key: bad value ***: expected a string"
    )


def test_toml_value_and_table_conflicts_explain_the_table_spelling(
    config_error, tmp_path: Path
) -> None:
    path = tmp_path / "c.toml"
    text = (
        '[listener.tcp]\ndefault = "127.0.0.1:1883"\n\n[listener.tcp.default]\nmountpoint = "x"\n'
    )
    assert config_error("c.toml", text) == (
        f"{path}:4: listener.tcp.default: listener.tcp.default already has a value (line 2), "
        'so it cannot also be a table; write address = "ip:port" inside [listener.tcp.default]'
    )
    text = "[plugins]\nwebhooks = true\nwebhooks.priority = 1\n"
    assert config_error("c.toml", text) == (
        f"{path}:3: plugins.webhooks.priority: plugins.webhooks already has a value (line 2), "
        "so it cannot also be a table; write enabled = true inside [plugins.webhooks]"
    )
    text = 'webhooks.a = "x"\nwebhooks.a.b = "y"\n'
    assert config_error("c.toml", text) == (
        f"{path}:2: webhooks.a.b: webhooks.a already has a value (line 1), "
        "so it cannot also be a table"
    )
