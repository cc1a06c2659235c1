"""TOML keys get the right line numbers (tomllib reports none; the loader scans for them)."""

from __future__ import annotations

TRICKY = '''\
# comments, multi-line strings and arrays must not confuse the scanner
nodename = "a = b"            # line 2

x.description = """
fake = "not a key"
[not.a.table]
"""
[webhooks]
tags = [
  "x = 1",
  # comment inside an array
  "[y]",
]
literal = \'\'\'
also = not a key
\'\'\'
"quoted.part".key = 1          # line 17
inline = { a = 1, b = { c = 2 } }

[webhooks.w1]
  hook = "auth_on_register"    # line 21
  endpoint = 'http://127.0.0.1/#frag'

[vmq_diversity]
script_dir = "./lua"            # line 25
'''


def test_lines_survive_strings_arrays_and_inline_tables(load) -> None:
    config = load("t.toml", TRICKY)
    assert config.broker.nodename == "a = b"
    webhooks = config.sections["webhooks"]
    lines = {key: origin.line for key, origin in webhooks.origins.items()}
    assert lines == {
        "tags": 9,
        "literal": 14,
        "quoted.part.key": 17,
        "inline.a": 18,  # keys inside inline tables get the line of the table's key
        "inline.b.c": 18,
        "w1.hook": 21,
        "w1.endpoint": 22,
    }
    assert webhooks["tags"] == ["x = 1", "[y]"]
    assert webhooks["w1.endpoint"] == "http://127.0.0.1/#frag"
    assert config.sections["diversity"].origins["script_dir"].line == 25
    assert config.sections["x"].origins["description"].line == 4


def test_dotted_keys_and_headers(load) -> None:
    config = load(
        "d.toml",
        """
        plugins.webhooks.priority = 3
        [listener.tcp]
        default = "127.0.0.1:0"
        """,
    )
    assert config.plugin("webhooks").priority == 3
    assert config.plugin("webhooks").origin.line == 1
    assert config.listeners[0].origin.line == 3


def test_crlf_and_bom(write_config, tmp_path) -> None:
    from plugin_host.config import load_config

    path = tmp_path / "w.conf"
    path.write_bytes(b"\xef\xbb\xbfallow_anonymous = on\r\n\r\nretry_interval = 5\r\n")
    config = load_config(path)
    assert config.broker.allow_anonymous is True
    assert config.broker.retry_interval == 5.0
