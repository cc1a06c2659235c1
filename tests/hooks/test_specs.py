"""The hookspecs are the documented contract of DESIGN section 4."""

from __future__ import annotations

import inspect

import pluggy
import pytest

from plugin_host import hookimpl
from plugin_host.hooks import specs

DESIGN_HOOKS = [
    "auth_on_register",
    "auth_on_register_m5",
    "on_auth_m5",
    "on_register",
    "on_register_m5",
    "auth_on_publish",
    "auth_on_publish_m5",
    "on_publish",
    "on_publish_m5",
    "auth_on_subscribe",
    "auth_on_subscribe_m5",
    "on_subscribe",
    "on_subscribe_m5",
    "on_unsubscribe",
    "on_unsubscribe_m5",
    "on_deliver",
    "on_deliver_m5",
    "on_offline_message",
    "on_client_wakeup",
    "on_client_offline",
    "on_client_gone",
    "on_session_expired",
    "on_message_drop",
    "on_topic_unsubscribed",
]

# Webhook JSON field names (spec 3.2) are the argument names.
EXPECTED_ARGS = {
    "auth_on_register": {
        "peer_addr",
        "peer_port",
        "mountpoint",
        "client_id",
        "username",
        "password",
        "clean_session",
        "listener_addr",
        "listener_port",
        "listener_type",
        "client_cert",
    },
    "auth_on_publish_m5": {
        "username",
        "mountpoint",
        "client_id",
        "qos",
        "topic",
        "payload",
        "retain",
        "properties",
    },
    "auth_on_subscribe": {"username", "mountpoint", "client_id", "topics"},
    "on_unsubscribe": {"username", "mountpoint", "client_id", "topics"},
    "on_deliver_m5": {
        "username",
        "mountpoint",
        "client_id",
        "qos",
        "topic",
        "payload",
        "retain",
        "properties",
    },
    "on_client_gone": {"mountpoint", "client_id"},
    "on_message_drop": {
        "mountpoint",
        "client_id",
        "topic",
        "qos",
        "payload",
        "properties",
        "reason",
    },
    "on_topic_unsubscribed": {"mountpoint", "client_id", "topics"},
}


def test_every_design_hook_has_a_spec():
    assert sorted(specs.ALL_HOOKS) == sorted(DESIGN_HOOKS)
    assert set(DESIGN_HOOKS) == specs.CHAIN_HOOKS | specs.NOTIFY_HOOKS
    assert not specs.CHAIN_HOOKS & specs.NOTIFY_HOOKS


@pytest.mark.parametrize("hook", sorted(EXPECTED_ARGS))
def test_argument_names(hook):
    assert set(specs.HOOK_ARGS[hook]) == EXPECTED_ARGS[hook]


@pytest.mark.parametrize("hook", DESIGN_HOOKS + sorted(specs.META_HOOKS))
def test_docstrings(hook):
    doc = inspect.getdoc(getattr(specs, hook))
    assert doc and len(doc) > 60
    if hook in specs.CHAIN_HOOKS:
        assert "**Returns:**" in doc and "**On deny" in doc
        assert "**When:**" in doc or "**Arguments:**" in doc


def test_impl_with_a_wrong_argument_name_is_rejected_by_pluggy():
    pm = pluggy.PluginManager("plugin_host")
    pm.add_hookspecs(specs)

    class Bad:
        @hookimpl
        def auth_on_publish(self, topik):
            pass

    with pytest.raises(pluggy.PluginValidationError, match="topik"):
        pm.register(Bad())
