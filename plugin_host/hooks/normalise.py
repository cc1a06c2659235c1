"""Turn the loose value one hookimpl returned into an :class:`Outcome` (or ``None`` = next).

The forms (python-forms.md, "Return values"): ``None`` next, ``True`` ok, ``dict`` ok with
modifiers, ``False`` deny, :class:`~plugin_host.Deny` deny with a reason, ``list`` a rewritten
topic list (subscribe/unsubscribe hooks), ``bytes`` a new payload (``auth_on_publish`` and
``on_deliver``, MQTT 3 forms). Anything else raises :class:`InvalidResult`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plugin_host.hooks.modifiers import (
    BYTES_RESULT_HOOKS,
    LIST_RESULT_HOOKS,
    InvalidResult,
    validate_deny_properties,
    validate_modifiers,
    validate_topics,
)
from plugin_host.hooks.results import ALLOW, Deny, Outcome
from plugin_host.hooks.specs import RESULT_OPTIONAL_HOOKS

__all__ = ["deny_outcome", "normalise_result"]


def deny_outcome(
    hook: str,
    plugin: str | None,
    reason: str,
    reason_code: int | None = None,
    *,
    invalid_credentials: bool = False,
    properties: dict[str, Any] | None = None,
) -> Outcome:
    """The outcome of a refusal: a deny, or "unchanged" for on_deliver/on_unsubscribe."""
    if hook in RESULT_OPTIONAL_HOOKS:
        return Outcome(allowed=True, unchanged=True, reason=reason, plugin=plugin)
    return Outcome(
        allowed=False,
        reason=reason,
        reason_code=reason_code,
        invalid_credentials=invalid_credentials,
        properties=properties,
        plugin=plugin,
    )


def _from_deny(hook: str, value: Deny, plugin: str | None) -> Outcome:
    if not isinstance(value.reason, str):
        raise InvalidResult(f"Deny.reason must be a str, got {type(value.reason).__name__}")
    code = value.reason_code
    if code is not None and (
        not isinstance(code, int) or isinstance(code, bool) or not 0x80 <= code <= 0xFF
    ):
        raise InvalidResult(f"Deny.reason_code must be an MQTT 5 error code (0x80-0xFF): {code!r}")
    properties = None if value.properties is None else validate_deny_properties(value.properties)
    return deny_outcome(
        hook,
        plugin,
        value.reason,
        code,
        invalid_credentials=bool(value.invalid_credentials),
        properties=properties,
    )


def normalise_result(
    hook: str, value: Any, args: Mapping[str, Any], plugin: str | None = None
) -> Outcome | None:
    """Normalise one chain hook result; ``None`` means next. Raises :class:`InvalidResult`."""
    # The common answers first: no allocation for next / ok.
    if value is None:
        return None
    if value is True:
        return ALLOW
    if value is False:
        return deny_outcome(hook, plugin, "not_authorized")
    if isinstance(value, Deny):
        return _from_deny(hook, value, plugin)
    if isinstance(value, Mapping):
        modifiers = validate_modifiers(hook, value, args)
        if not modifiers:
            return ALLOW
        if hook in LIST_RESULT_HOOKS:
            return Outcome(
                allowed=True,
                topics=modifiers.get("topics"),
                properties=modifiers.get("properties"),
                plugin=plugin,
            )
        return Outcome(allowed=True, modifiers=modifiers, plugin=plugin)
    if isinstance(value, list | tuple) and hook in LIST_RESULT_HOOKS:
        return Outcome(allowed=True, topics=validate_topics(hook, value, args), plugin=plugin)
    if isinstance(value, bytes | bytearray) and hook in BYTES_RESULT_HOOKS:
        return Outcome(allowed=True, modifiers={"payload": bytes(value)}, plugin=plugin)
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    raise InvalidResult(f"unexpected result of type {type(value).__name__}: {shown}")
