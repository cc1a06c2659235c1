"""The built-in plugins and the example distribution through a real broker, with paho-mqtt."""

from __future__ import annotations

import pytest

from plugin_host.plugins.builtin import acl, passwd
from plugin_host.plugins.builtin.passwd import hash_password
from plugin_host.settings import Config, PluginSection, PluginSettings
from plugin_host.testing import run_broker

ACL = """\
topic read public/#
user alice
topic alice/#
"""


def config_with(tmp_path, **sections) -> Config:
    config = Config()
    for name, values in sections.items():
        config.sections[name] = PluginSection(plugin=name, values=values)
    return config


@pytest.fixture
def files(tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text(f"alice:{hash_password(b'wonderland', rounds=4)}\n")
    rules = tmp_path / "acl"
    rules.write_text(ACL)
    return config_with(tmp_path, passwd={"password_file": str(pw)}, acl={"acl_file": str(rules)})


@pytest.mark.parametrize("v5", [False, True])
async def test_passwd_connack_codes(files, paho, v5):
    async with run_broker(
        files, plugins={"passwd": passwd, "acl": acl}, allow_anonymous=False
    ) as broker:
        good = paho(broker.address, "good", v5=v5, username="alice", password="wonderland")
        assert (await good.connect()).value == 0
        wrong = paho(broker.address, "wrong", v5=v5, username="alice", password="nope")
        # MQTT 3.1.1 return code 4 / MQTT 5 0x86 (paho reports v3 codes as their v5 names).
        assert (await wrong.connect()).value == 0x86
        stranger = paho(broker.address, "x", v5=v5, username="mallory", password="x")
        # Unknown user: passwd says next, the chain is exhausted: refused (v3: 5 not
        # authorised, reported by paho as 0x87).
        code = (await stranger.connect()).value
        assert code >= 0x80
        if not v5:
            assert code == 0x87


@pytest.mark.parametrize("v5", [False, True])
async def test_acl_through_the_broker(files, paho, v5):
    async with run_broker(
        files, plugins={"passwd": passwd, "acl": acl}, allow_anonymous=False
    ) as broker:
        alice = paho(broker.address, "alice", v5=v5, username="alice", password="wonderland")
        assert (await alice.connect()).value == 0
        assert await alice.subscribe("alice/#", 1) == [1]
        assert await alice.subscribe("public/news", 0) == [0]
        # Nobody grants read on secret/#: the chain is exhausted, SUBACK failure.
        assert await alice.subscribe("secret/#", 1) == [0x87 if v5 else 0x80]
        await alice.publish("alice/notes", b"hi", qos=1)
        message = await alice.receive()
        assert (message.topic, message.payload) == ("alice/notes", b"hi")


async def test_installed_example_distribution_rewrites_topics(paho):
    config = Config()
    config.sections["example"] = PluginSection(
        plugin="example", values={"topic_prefix": "tenant1/", "audit": "on"}
    )
    # Keep the other installed plugins (webhooks, diversity...) out of this broker.
    for name in ("webhooks", "diversity", "passwd", "acl"):
        config.plugins[name] = PluginSettings(name=name, enabled=False)
    async with run_broker(config, installed_plugins=True, allow_anonymous=True) as broker:
        assert broker.plugins.names == ("example",)
        client = paho(broker.address, "c1")
        assert (await client.connect()).value == 0
        assert await client.subscribe("tenant1/#", 1) == [1]
        await client.publish("readings", b"42", qos=1)
        message = await client.receive()
        assert (message.topic, message.payload) == ("tenant1/readings", b"42")
    assert broker.plugins.plugin("example").published == [("c1", "tenant1/readings")]
