"""Per-listener plugin chains (spec 1.3): ``auth_plugins`` restricts and orders
auth_on_register(_m5) / on_auth_m5, ``authz_plugins`` auth_on_publish(_m5) /
auth_on_subscribe(_m5), on that listener only. A restricted chain that nobody answers is
exhausted: denied."""

# ruff: noqa: SIM117

from __future__ import annotations

import pytest
import trio

from plugin_host import Deny
from plugin_host.hooks.forward import forward_hooks
from plugin_host.mqtt import Puback, Will
from plugin_host.settings import ConfigError, ListenerConfig
from plugin_host.testing import open_client, run_broker
from plugin_host.testing.client import ConnectionRefused

#: The hooks a listener's chains restrict (auth_plugins: register; authz_plugins: the rest).
CHAIN_HOOKS = (
    "auth_on_register", "auth_on_register_m5", "auth_on_publish", "auth_on_publish_m5",
    "auth_on_subscribe", "auth_on_subscribe_m5",
)  # fmt: skip


@forward_hooks(CHAIN_HOOKS, to="_answer", awaits=False)
class Refuses:
    """First in the default chain (plugins without priority go by name): says no to all."""

    def __init__(self) -> None:
        self.hooks: list[str] = []

    def _answer(self, hook: str, args: dict) -> Deny:
        self.hooks.append(hook)
        return Deny("a says no")


@forward_hooks(CHAIN_HOOKS, to="_answer", awaits=False)
class Allows:
    def _answer(self, hook: str, args: dict) -> object:
        if hook.startswith("auth_on_publish"):
            return {"topic": f"via-b/{args['topic']}"}
        return True


@forward_hooks(CHAIN_HOOKS[:2], to="_answer", awaits=False)
class RegisterOnly:
    def _answer(self, hook: str, args: dict) -> bool:
        return True


LISTENERS = [
    ListenerConfig(kind="tcp", name="default", host="127.0.0.1", port=0),
    ListenerConfig(
        kind="tcp", name="open", host="127.0.0.1", port=0, auth_plugins=("b",),
        authz_plugins=("b",),
    ),
    ListenerConfig(
        kind="tcp", name="nobody", host="127.0.0.1", port=0, auth_plugins=("c",),
        authz_plugins=("c",),
    ),
]  # fmt: skip


def _broker(refuses: Refuses):
    return run_broker(
        plugins={"a": refuses, "b": Allows(), "c": RegisterOnly()},
        listeners=LISTENERS,
        allow_anonymous=False,
    )


@pytest.mark.parametrize("protocol", [4, 5])
async def test_auth_plugins_choose_who_authenticates_on_a_listener(protocol):
    refuses = Refuses()
    async with _broker(refuses) as broker:
        with pytest.raises(ConnectionRefused):
            async with open_client(broker.listener_address("default"), protocol=protocol):
                pass
        assert refuses.hooks == ["auth_on_register_m5" if protocol == 5 else "auth_on_register"]
        async with open_client(broker.listener_address("open"), protocol=protocol):
            pass
        async with open_client(broker.listener_address("nobody"), protocol=protocol):
            pass
    assert len(refuses.hooks) == 1  # never asked on the listeners with their own chain


@pytest.mark.parametrize("protocol", [4, 5])
async def test_authz_plugins_choose_who_authorises_publish_and_subscribe(protocol):
    refuses = Refuses()
    async with _broker(refuses) as broker:
        async with open_client(
            broker.listener_address("open"), client_id="sub", protocol=protocol
        ) as sub:
            assert await sub.subscribe("via-b/#", 1) == [1]
            async with open_client(
                broker.listener_address("open"), client_id="pub", protocol=protocol
            ) as pub:
                ack = await pub.publish("t", b"1", qos=1)
                assert isinstance(ack, Puback) and ack.reason_code == 0
                await pub.publish("t0", b"2", qos=0)
                # the answer of b, the only plugin asked here, applies (MQTT 3 too)
                first, second = await sub.receive_many(2)
            assert (first.topic, second.topic) == ("via-b/t", "via-b/t0")
            async with open_client(
                broker.listener_address("nobody"), client_id="other", protocol=protocol
            ) as other:
                # c does not answer subscribe or publish: the chain is exhausted
                assert (await other.subscribe("x", 0))[0] >= 0x80
                if protocol == 5:
                    ack = await other.publish("t", b"3", qos=1)
                    assert isinstance(ack, Puback) and ack.reason_code == 0x87
                else:
                    # MQTT 3: a denied PUBLISH closes the connection (spec 2.4)
                    with pytest.raises(ConnectionError):
                        await other.publish("t", b"3", qos=1)
        assert sub.pending_messages() == []
    assert refuses.hooks == []  # a was never asked: neither listener's chain names it


async def test_the_will_and_reauthorisation_use_the_listener_chain():
    refuses = Refuses()
    async with _broker(refuses) as broker:
        async with open_client(broker.listener_address("open"), client_id="sub") as sub:
            await sub.subscribe("via-b/#", 0)
            # the will is checked by b alone (and rewritten by it) ...
            async with open_client(
                broker.listener_address("open"), client_id="w", will=Will("last", b"bye")
            ) as w:
                await w.send_raw(b"\x00\x00")  # reserved packet type: closed, will sent
                with trio.fail_after(5):
                    await w.closed.wait()
            assert (await sub.receive()).topic == "via-b/last"
            # ... and on a listener whose chain does not answer auth_on_publish, refused
            with pytest.raises(ConnectionRefused):
                async with open_client(
                    broker.listener_address("nobody"), client_id="w2", will=Will("x", b"")
                ):
                    pass
            # reauthorising asks the chain of the listener the client is connected through
            assert await broker.host.reauthorize_subscriptions("sub") == []
    assert refuses.hooks == []


async def test_a_chain_naming_a_plugin_that_is_not_enabled_stops_start_up():
    listener = ListenerConfig(
        kind="tcp", name="typo", host="127.0.0.1", port=0, authz_plugins=("b", "webhook")
    )
    errors: list[ConfigError] = []
    try:
        async with run_broker(plugins={"b": Allows()}, listeners=[listener]):
            pass
    except* ConfigError as group:  # run_broker's nursery may wrap it
        errors.extend(e for e in group.exceptions if isinstance(e, ConfigError))
    [error] = errors
    assert error.key == "listener.tcp.typo.authz_plugins"
    assert "webhook: not an enabled plugin (enabled: b)" in error.reason
