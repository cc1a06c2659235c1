"""The modifier validator: a table per hook (spec 3.4, python-forms.md)."""

from __future__ import annotations

import pytest

from plugin_host import Deny
from plugin_host.hooks.modifiers import (
    DEFAULT_SUBSCRIPTION_OPTIONS,
    InvalidModifiers,
    InvalidResult,
    validate_modifiers,
)
from plugin_host.hooks.normalise import normalise_result
from plugin_host.hooks.results import ALLOW

UP = [("k", "v"), ("k", "w")]

VALID = [
    # auth_on_register
    ("auth_on_register", {"username": "x", "clean_session": False}, None),
    (
        "auth_on_register",
        {"subscriber_id": {"mountpoint": "mp", "client_id": "c2"}},
        {"mountpoint": "mp", "client_id": "c2"},
    ),
    ("auth_on_register", {"mountpoint": "mp"}, None),
    ("auth_on_register", {"client_id": "c9"}, None),
    (
        "auth_on_register",
        {
            "max_message_size": 1024,
            "max_inflight_messages": 10,
            "retry_interval": 5000,
            "upgrade_qos": True,
            "max_online_messages": -1,
            "max_offline_messages": 0,
            "max_message_rate": 10,
            "max_connection_lifetime": 3600,
        },
        None,
    ),
    ("auth_on_register", {"max_message_size": 1024.0}, {"max_message_size": 1024}),
    (
        "auth_on_register",
        {
            "allow_register": True,
            "allow_publish": False,
            "allow_subscribe": True,
            "allow_unsubscribe": True,
            "queue_type": "lifo",
            "max_drain_time": 10,
            "max_msgs_per_drain_step": 5,
            "shared_subscription_policy": "random",
        },
        None,
    ),
    # auth_on_register_m5
    (
        "auth_on_register_m5",
        {"clean_start": True, "properties": {"p_user_property": UP}},
        None,
    ),
    ("auth_on_register_m5", {"clean_session": False}, {"clean_start": False}),
    (
        "auth_on_register_m5",
        {"properties": {"p_session_expiry_interval": 60, "p_user_property": [["a", "b"]]}},
        {"properties": {"p_session_expiry_interval": 60, "p_user_property": [("a", "b")]}},
    ),
    # auth_on_publish
    (
        "auth_on_publish",
        {
            "topic": "a/b",
            "payload": b"p",
            "qos": 0,
            "retain": True,
            "mountpoint": "m",
            "throttle": 100,
        },
        None,
    ),
    ("auth_on_publish", {"payload": bytearray(b"x")}, {"payload": b"x"}),
    # auth_on_publish_m5
    (
        "auth_on_publish_m5",
        {
            "topic": "t",
            "properties": {
                "p_user_property": UP,
                "p_message_expiry_interval": 10,
                "p_content_type": "text/plain",
                "p_payload_format_indicator": "utf8",
                "p_response_topic": "r/t",
                "p_correlation_data": b"\x00\x01",
            },
        },
        None,
    ),
    (
        "auth_on_publish_m5",
        {"properties": {"p_payload_format_indicator": "undefined"}},
        {"properties": {"p_payload_format_indicator": "unspecified"}},
    ),
    # on_deliver(_m5)
    ("on_deliver", {"topic": "x", "payload": b""}, None),
    (
        "on_deliver_m5",
        {"payload": b"y", "properties": {"p_content_type": "a", "p_user_property": []}},
        None,
    ),
    # on_auth_m5
    (
        "on_auth_m5",
        {
            "reason_code": "continue_authentication",
            "properties": {"p_authentication_method": "SCRAM", "p_authentication_data": b"d"},
        },
        {
            "reason_code": 24,
            "properties": {"p_authentication_method": "SCRAM", "p_authentication_data": b"d"},
        },
    ),
    ("on_auth_m5", {"reason_code": "success"}, {"reason_code": 0}),
    ("on_auth_m5", {"reason_code": 24}, None),
    (
        "on_auth_m5",
        {"properties": {"p_authentication_method": "X"}},
        {"reason_code": 0, "properties": {"p_authentication_method": "X"}},
    ),
    # subscribe / unsubscribe dict forms
    ("auth_on_subscribe", {"topics": [("a/#", 1)]}, None),
    (
        "on_unsubscribe_m5",
        {"topics": ["a/+"], "properties": {"p_reason_string": "ok"}},
        None,
    ),
    ("auth_on_publish", {}, None),
]


@pytest.mark.parametrize(("hook", "modifiers", "expected"), VALID)
def test_valid_modifiers(hook, modifiers, expected):
    result = validate_modifiers(hook, modifiers, {"topics": [("a/#", 0)]})
    assert result == (modifiers if expected is None else expected)


INVALID = [
    ("auth_on_register", {"color": "red"}, "unknown modifier"),
    ("auth_on_register", {"username": 5}, "expected a str"),
    ("auth_on_register", {"username": None}, "expected a str"),
    ("auth_on_register", {"clean_session": 1}, "expected a bool"),
    ("auth_on_register", {"clean_start": True}, "unknown modifier"),  # v3 spelling only
    ("auth_on_register", {"client_id": ""}, "must not be empty"),
    ("auth_on_register", {"max_message_size": -1}, "out of range"),
    ("auth_on_register", {"max_offline_messages": -2}, "out of range"),
    ("auth_on_register", {"max_inflight_messages": True}, "expected an int"),
    ("auth_on_register", {"retry_interval": "5s"}, "expected an int"),
    ("auth_on_register", {"max_message_rate": float("inf")}, "expected an int"),
    ("auth_on_register", {"queue_type": "stack"}, "not one of"),
    ("auth_on_register", {"shared_subscription_policy": 1}, "expected a str"),
    ("auth_on_register", {"subscriber_id": "x"}, "subscriber_id"),
    ("auth_on_register", {"subscriber_id": {"client_id": "a", "x": 1}}, "subscriber_id"),
    (
        "auth_on_register",
        {"client_id": "a", "subscriber_id": {"client_id": "b"}},
        "contradicts",
    ),
    ("auth_on_register", {"properties": {}}, "unknown modifier"),  # v3 has no properties
    ("auth_on_register_m5", {"properties": {"p_max_qos": 1}}, "not allowed here"),
    ("auth_on_register_m5", {"properties": {"p_user_property": [("a",)]}}, "pair"),
    ("auth_on_register_m5", {"properties": {"p_user_property": {"a": "b"}}}, "list"),
    ("auth_on_register_m5", {"properties": {"p_session_expiry_interval": 2**32}}, "range"),
    ("auth_on_register_m5", {"properties": []}, "expected a dict"),
    ("auth_on_register_m5", {"clean_start": True, "clean_session": False}, "contradicts"),
    ("auth_on_publish", {"topic": "a/#"}, "wildcard"),
    ("auth_on_publish", {"topic": ""}, "empty"),
    ("auth_on_publish", {"topic": 7}, "expected a str"),
    ("auth_on_publish", {"qos": 3}, "out of range"),
    ("auth_on_publish", {"qos": -1}, "out of range"),
    ("auth_on_publish", {"retain": "true"}, "expected a bool"),
    ("auth_on_publish", {"payload": "text"}, "expected bytes"),
    ("auth_on_publish", {"throttle": -5}, "out of range"),
    ("auth_on_publish", {"properties": {}}, "unknown modifier"),
    ("auth_on_publish", {"username": "x"}, "unknown modifier"),
    ("auth_on_publish_m5", {"properties": {"p_session_expiry_interval": 1}}, "not allowed"),
    ("auth_on_publish_m5", {"properties": {"p_response_topic": "a/+"}}, "wildcard"),
    ("auth_on_publish_m5", {"properties": {"p_correlation_data": "str"}}, "bytes"),
    ("auth_on_publish_m5", {"properties": {"p_payload_format_indicator": 1}}, "str"),
    ("auth_on_publish_m5", {"properties": {"p_payload_format_indicator": "text"}}, "not one"),
    ("on_deliver", {"qos": 1}, "unknown modifier"),
    ("on_deliver", {"topic": "+"}, "wildcard"),
    ("on_deliver_m5", {"properties": {"p_message_expiry_interval": 5}}, "not allowed"),
    ("on_auth_m5", {"reason_code": 0x87}, "is not 0, 24"),
    ("on_auth_m5", {"reason_code": "failure"}, "is not 0, 24"),
    ("on_auth_m5", {"properties": {"p_authentication_data": "x"}}, "bytes"),
    ("on_auth_m5", {"properties": {"p_user_property": []}}, "not allowed"),
    ("auth_on_subscribe", {"topics": [("a", 1)], "properties": {}}, "unknown key"),
    ("auth_on_subscribe_m5", {"topics": [("a", 1)], "extra": 1}, "unknown key"),
    ("auth_on_subscribe_m5", {"properties": {"p_content_type": "x"}}, "not allowed"),
    ("on_unsubscribe", {"topics": ["a/#/b"]}, "misplaced"),
    ("on_register", {"x": 1}, "takes no modifiers"),
    ("on_publish", {}, "takes no modifiers"),
]


@pytest.mark.parametrize(("hook", "modifiers", "fragment"), INVALID)
def test_invalid_modifiers(hook, modifiers, fragment):
    with pytest.raises(InvalidModifiers, match=fragment):
        validate_modifiers(hook, modifiers, {"topics": [("a/#", 0)]})


# --- topic lists ----------------------------------------------------------------------------

V3_REQUEST = {"topics": [("a/b", 1), ("c/#", 2)]}
V5_OPTIONS = {"no_local": True, "rap": True, "retain_handling": "dont_send"}
V5_REQUEST = {"topics": [("a/b", 1, V5_OPTIONS), ("$share/g/c/#", 0, DEFAULT_SUBSCRIPTION_OPTIONS)]}


def test_v3_subscribe_list_rewrite_and_rejection():
    outcome = normalise_result("auth_on_subscribe", [("a/b", 0), ("c/#", 128)], V3_REQUEST)
    assert outcome.allowed and outcome.topics == [("a/b", 0), ("c/#", 128)]


def test_v5_subscribe_options_default_to_the_request():
    outcome = normalise_result(
        "auth_on_subscribe_m5", [("a/b", 2), ("$share/g/c/#", 0x87, {"rap": True})], V5_REQUEST
    )
    assert outcome.topics == [
        ("a/b", 2, V5_OPTIONS),
        ("$share/g/c/#", 0x87, {**DEFAULT_SUBSCRIPTION_OPTIONS, "rap": True}),
    ]


def test_v5_subscribe_dict_form_with_properties():
    outcome = normalise_result(
        "auth_on_subscribe_m5",
        {"topics": [("a/b", 1, {}), ("x", 0)], "properties": {"p_reason_string": "r"}},
        V5_REQUEST,
    )
    assert outcome.topics[1] == ("x", 0, DEFAULT_SUBSCRIPTION_OPTIONS)
    assert outcome.properties == {"p_reason_string": "r"}


@pytest.mark.parametrize(
    ("hook", "value", "fragment"),
    [
        ("auth_on_subscribe", [("a/b", 1)], "keep it 1:1"),
        ("auth_on_subscribe", [("a/b", 1, {}), ("c", 0)], "expected a"),  # options are v5 only
        ("auth_on_subscribe", [("a/b", 3), ("c", 0)], "neither 0-2"),
        ("auth_on_subscribe", [("a/b", 1), ("c/#/d", 0)], "misplaced"),
        ("auth_on_subscribe", [("a/b", 1), "c"], "expected a"),
        ("auth_on_subscribe", [("a/b", 1), ("$share//c", 1)], "share group"),
        ("auth_on_subscribe_m5", [("a", 1, {"nl": 1}), ("b", 0)], "unknown subscription"),
        ("auth_on_subscribe_m5", [("a", 1, {"retain_handling": 2}), ("b", 0)], "expected a str"),
        ("auth_on_subscribe_m5", [("a", 1, []), ("b", 0)], "expected a dict"),
        ("on_unsubscribe", ["a", 5], "expected a str"),
        ("on_unsubscribe", "a/b", "unexpected result"),
        ("on_unsubscribe_m5", ["a+"], "misplaced"),
    ],
)
def test_invalid_topic_lists(hook, value, fragment):
    request = V5_REQUEST if hook.endswith("_m5") else V3_REQUEST
    with pytest.raises(InvalidResult, match=fragment):
        normalise_result(hook, value, request)


def test_rejected_slot_filter_is_not_checked():
    outcome = normalise_result("auth_on_subscribe", [("a/b", 1), ("bad/#/x", 128)], V3_REQUEST)
    assert outcome.topics == [("a/b", 1), ("bad/#/x", 128)]


def test_unsubscribe_rewrite_may_change_the_count():
    outcome = normalise_result("on_unsubscribe", ["x/+", "y/#", "z"], {"topics": ["a"]})
    assert outcome.topics == ["x/+", "y/#", "z"]


# --- whole results ----------------------------------------------------------------------------


def test_plain_answers():
    assert normalise_result("auth_on_publish", None, {}) is None
    assert normalise_result("auth_on_publish", True, {}) is ALLOW
    assert normalise_result("auth_on_publish", {}, {}) is ALLOW
    denied = normalise_result("auth_on_publish", False, {}, "p")
    assert (denied.allowed, denied.reason, denied.plugin) == (False, "not_authorized", "p")


@pytest.mark.parametrize(
    ("deny", "fragment"),
    [
        (Deny("x", reason_code=0x10), "0x80-0xFF"),
        (Deny("x", reason_code=True), "0x80-0xFF"),
        (Deny(5), "reason must be a str"),  # type: ignore[arg-type]
        (Deny("x", properties={"p_content_type": "t"}), "not allowed"),
    ],
)
def test_invalid_deny(deny, fragment):
    with pytest.raises(InvalidResult, match=fragment):
        normalise_result("auth_on_register_m5", deny, {})


def test_deny_properties_are_normalised():
    outcome = normalise_result(
        "auth_on_register_m5",
        Deny(
            "moved",
            0x9D,
            properties={"p_server_ref": "other:1883", "p_user_property": [["a", "b"]]},
        ),
        {},
    )
    assert outcome.reason_code == 0x9D
    assert outcome.properties == {"p_server_ref": "other:1883", "p_user_property": [("a", "b")]}
