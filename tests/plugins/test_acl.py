"""The built-in acl plugin (vmq_acl / mosquitto syntax)."""

from __future__ import annotations

import importlib.metadata
import os
import textwrap
from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs

from plugin_host.config import load_config
from plugin_host.hooks.results import ALLOW, EXHAUSTED
from plugin_host.plugins.builtin.acl import compile_filter, covers, parse_acl
from plugin_host.plugins.builtin.watch import FileFormatError
from plugin_host.plugins.manager import PluginManager
from plugin_host.settings import ConfigError

ACL = """\
# general section: every client
topic read public/#
topic write public/chat

user alice
topic alice/#
topic read shared/+/news

user bob
topic write bob/out

pattern read devices/%c/in
pattern write devices/%u/%c/out
pattern %m/home
"""


def acl_entry_point() -> list[importlib.metadata.EntryPoint]:
    return [ep for ep in importlib.metadata.entry_points(group="plugin_host") if ep.name == "acl"]


def manager_for(tmp_path: Path, text: str, interval: str = "0") -> PluginManager:
    acl = tmp_path / "acl"
    acl.write_text(textwrap.dedent(text))
    conf = tmp_path / "broker.conf"
    conf.write_text(f"acl.acl_file = {acl}\nacl.acl_reload_interval = {interval}\n")
    return PluginManager.discover(load_config(conf), entry_points=acl_entry_point())


def pub(topic, username="alice", client_id="c1", mountpoint="", m5=False):
    args = {"username": username, "client_id": client_id, "mountpoint": mountpoint}
    args.update(qos=0, topic=topic, payload=b"", retain=False)
    return ("auth_on_publish_m5" if m5 else "auth_on_publish"), args


def sub(*filters, username="alice", client_id="c1", mountpoint="", m5=False):
    topics = [(f, 1, {}) if m5 else (f, 1) for f in filters]
    args = {"username": username, "client_id": client_id, "mountpoint": mountpoint}
    args["topics"] = topics
    return ("auth_on_subscribe_m5" if m5 else "auth_on_subscribe"), args


@pytest.mark.parametrize(
    ("rule", "wanted", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/#", "a/+/c", True),
        ("a/+", "a/+", True),
        ("a/+", "a/#", False),
        ("a/b", "a/+", False),
        ("#", "#", True),
        ("+/+", "+/b", True),
        ("+/b", "+/+", False),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/broker/load", True),
    ],
)
def test_filter_coverage(rule, wanted, expected):
    assert covers(compile_filter(rule), wanted.split("/")) is expected


async def test_general_user_and_pattern_rules(tmp_path, host):
    async with manager_for(tmp_path, ACL).running(host) as dispatcher:

        async def check(hook_args):
            return await dispatcher.auth(*hook_args)

        # General section: everybody, anonymous clients too.
        assert await check(sub("public/#", username=None)) is ALLOW
        assert await check(pub("public/chat", username=None)) is ALLOW
        assert await check(pub("public/other", username="bob")) is EXHAUSTED  # read-only
        # alice's own rules, read and write; bob has no read rule on alice/#.
        assert await check(pub("alice/x/y")) is ALLOW
        assert await check(sub("alice/#", "shared/eu/news", m5=True)) is ALLOW
        assert await check(pub("shared/eu/news")) is EXHAUSTED  # read-only rule
        assert await check(sub("alice/#", username="bob")) is EXHAUSTED
        assert await check(pub("bob/out", username="bob", m5=True)) is ALLOW
        # One uncovered filter makes the whole SUBSCRIBE a "next".
        assert await check(sub("alice/#", "secret/#")) is EXHAUSTED
        # Patterns: %c client id, %u user name, %m mountpoint.
        assert await check(sub("devices/c1/in", client_id="c1", username=None)) is ALLOW
        assert await check(sub("devices/c2/in", client_id="c1")) is EXHAUSTED
        assert await check(pub("devices/alice/c1/out", client_id="c1")) is ALLOW
        assert await check(pub("devices/alice/c2/out", client_id="c1")) is EXHAUSTED
        assert await check(pub("devices/alice/c1/out", username=None)) is EXHAUSTED
        assert await check(pub("tenant/home", mountpoint="tenant")) is ALLOW
        assert await check(pub("tenant/home", mountpoint="other")) is EXHAUSTED
        # Shared subscriptions are checked on the filter after $share/<group>/.
        assert await check(sub("$share/g/public/x", username=None)) is ALLOW
        assert await check(sub("$share/g/alice/#", username="bob")) is EXHAUSTED


async def test_substituted_values_are_literals(tmp_path, host):
    async with manager_for(tmp_path, "pattern read devices/%c/#\n").running(host) as dispatcher:
        assert await dispatcher.auth(*sub("devices/x/a", client_id="x")) is ALLOW
        # A client id "#" or "+" must not turn into a wildcard.
        assert await dispatcher.auth(*sub("devices/y/a", client_id="#")) is EXHAUSTED
        assert await dispatcher.auth(*sub("devices/+/a", client_id="+")) is EXHAUSTED
        assert await dispatcher.auth(*sub("devices/#/a", client_id="#")) is EXHAUSTED


def test_parse_errors_and_skipped_rules(tmp_path):
    with pytest.raises(FileFormatError, match=r"acl:3: unknown rule 'topc'"):
        parse_acl("topic a\n\ntopc b\n", tmp_path / "acl")
    with pytest.raises(FileFormatError, match=r":1: user without a name"):
        parse_acl("user\n", tmp_path / "acl")
    with capture_logs() as logs:
        rules = parse_acl("topic a/#/b\ntopic ok\n", tmp_path / "acl")
    assert [e["line"] for e in logs if e["event"] == "acl_rule_skipped"] == [1]
    assert rules.general["read"] == [("ok",)]


async def test_inactive_without_a_file_and_start_up_errors(tmp_path, host):
    manager = PluginManager.discover(load_config(None), entry_points=acl_entry_point())
    async with manager.running(host) as dispatcher:
        assert not dispatcher.implemented("auth_on_publish")
    with pytest.raises(ConfigError, match=r":1: acl.acl_file: .*acl:1: unknown rule"):
        async with manager_for(tmp_path, "allow all\n").running(host):
            pass


async def test_reloaded_when_the_file_changes(tmp_path, host):
    manager = manager_for(tmp_path, "topic a\n", interval="0.02")
    plugin = manager.plugin("acl")
    async with manager.running(host) as dispatcher:
        assert await dispatcher.auth(*pub("a")) is ALLOW
        assert await dispatcher.auth(*pub("b")) is EXHAUSTED
        generation = plugin.file.generation
        tmp = tmp_path / "acl.new"
        tmp.write_text("topic b\n")
        os.replace(tmp, tmp_path / "acl")
        with trio.fail_after(10):
            await plugin.file.wait_generation(generation + 1)
        assert await dispatcher.auth(*pub("a")) is EXHAUSTED
        assert await dispatcher.auth(*pub("b")) is ALLOW
