"""Fuzzing: arbitrary or mutated bytes only ever yield packets or raise MQTTError.

Never IndexError, UnicodeDecodeError, struct.error, ... and never a hang: every feed returns.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin_host.mqtt import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    MQTTError,
    Packet,
    Parser,
    Pingreq,
    Puback,
    Publish,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    encode,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PARSER_STATES = st.sampled_from(
    [
        ("pre", None),
        *[(side, level) for side in ("server", "client") for level in (3, 4, 5)],
    ]
)


def _parser(state: tuple[str, int | None], max_packet_size: int | None) -> Parser:
    side, level = state
    if side == "pre":
        return Parser(max_packet_size=max_packet_size)
    return Parser(
        server_side=side == "server", protocol_level=level, max_packet_size=max_packet_size
    )


def _feed_all(parser: Parser, pieces: list[bytes]) -> None:
    for piece in pieces:
        try:
            packets = parser.feed(piece)
        except MQTTError as exc:
            assert 0x80 <= exc.reason_code <= 0xA2
            return
        assert isinstance(packets, list)


def _valid_streams() -> dict[int, bytes]:
    props = {"user_property": [("k", "v")], "message_expiry_interval": 5}
    streams = {}
    for level in (3, 4, 5):
        v5 = level == 5
        packets: list[Packet] = [
            Connect(
                "MQIsdp" if level == 3 else "MQTT",
                level,
                "fuzz",
                True,
                30,
                "user",
                b"pw",
                Will("w/t", b"bye", 1, False, {"will_delay_interval": 3} if v5 else {}),
                {"receive_maximum": 5, "authentication_method": "m"} if v5 else {},
            ),
            Publish("a/b", b"payload", 1, False, False, 3, props if v5 else {}),
            Publish("a/b", b"payload"),
            Puback(3, 0x10 if v5 else 0),
            Pubrel(4),
            Subscribe(5, [Subscription("a/+", 1), Subscription("#", 2)]),
            Unsubscribe(6, ["a/+", "x"]),
            Pingreq(),
            Disconnect(0x04 if v5 else 0),
        ]
        if v5:
            packets.append(Auth(0x19, {"authentication_method": "m"}))
        streams[level] = b"".join(encode(p, level) for p in packets)
        server = [
            Connack(False, 0, {"maximum_qos": 1} if v5 else {}),
            Suback(5, [1, 2]),
            Unsuback(6, [0, 0x11] if v5 else []),
        ]
        streams[level + 10] = b"".join(encode(p, level) for p in server)
    return streams


VALID = _valid_streams()


@FUZZ
@given(state=PARSER_STATES, data=st.binary(max_size=300), size=st.none() | st.integers(1, 200))
def test_random_bytes(state: tuple[str, int | None], data: bytes, size: int | None) -> None:
    _feed_all(_parser(state, size), [data])


@FUZZ
@given(
    state=PARSER_STATES,
    chunks=st.lists(st.binary(min_size=1, max_size=40), max_size=10),
)
def test_random_chunks(state: tuple[str, int | None], chunks: list[bytes]) -> None:
    _feed_all(_parser(state, None), chunks)


@FUZZ
@given(
    which=st.sampled_from(sorted(VALID)),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
    truncate=st.none() | st.integers(0, 10_000),
    split=st.integers(0, 10_000),
)
def test_mutated_valid_streams(
    which: int, edits: list[tuple[int, int]], truncate: int | None, split: int
) -> None:
    data = bytearray(VALID[which])
    for pos, value in edits:
        data[pos % len(data)] = value
    if truncate is not None:
        del data[truncate % len(data) :]
    level = which % 10
    state = ("pre", None) if which < 10 else ("client", level)
    cut = split % (len(data) + 1)
    _feed_all(_parser(state, None), [bytes(data[:cut]), bytes(data[cut:])])


@FUZZ
@given(
    which=st.sampled_from(sorted(VALID)),
    insert_at=st.integers(0, 10_000),
    junk=st.binary(min_size=1, max_size=8),
)
def test_inserted_bytes(which: int, insert_at: int, junk: bytes) -> None:
    data = VALID[which]
    at = insert_at % (len(data) + 1)
    data = data[:at] + junk + data[at:]
    level = which % 10
    state = ("pre", None) if which < 10 else ("client", level)
    _feed_all(_parser(state, None), [data])


def test_valid_streams_parse() -> None:
    for which, data in VALID.items():
        parser = _parser(("pre", None) if which < 10 else ("client", which % 10), None)
        assert parser.feed(data)
        assert parser.buffered == 0
