"""Hookimpls that hand every argument to one method, generated from the hookspecs.

Some plugins treat many hooks alike: the webhooks plugin posts each hook's arguments to its
endpoints, whatever the hook. Written by hand, each such hookimpl repeats its hook's whole
signature around the same one-line body. :func:`forward_hooks` writes them instead::

    @forward_hooks(("auth_on_register", "auth_on_publish"), to="_chain")
    class MyPlugin:
        async def _chain(self, hook: str, args: dict[str, Any]) -> Any:
            ...

adds to ``MyPlugin`` one ``@hookimpl async def auth_on_register(self, peer_addr, peer_port,
..., client_cert)`` returning ``await self._chain("auth_on_register", {"peer_addr":
peer_addr, ...})``, and the same for ``auth_on_publish``.

Why generated code: pluggy (and the dispatcher) pass a hookimpl the arguments it *names*, read
from the function's code object, so a generic ``*args`` function would receive nothing. The
names come from :data:`plugin_host.hooks.specs.HOOK_ARGS` (the hookspecs themselves), so they
are exactly the hook's, in its order. The generated function is as cheap to call as a
hand-written one.

``awaits=False`` makes a plain ``def`` that returns ``self.<to>(hook, args)`` as it is (for
a method that answers at once or returns an awaitable). ``positional=True`` passes the
arguments as a tuple in the hookspec's order instead of a dict. A hook the class defines
itself is an error: list only the hooks whose logic really is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from plugin_host.hooks.markers import hookimpl
from plugin_host.hooks.specs import HOOK_ARGS

__all__ = ["forward_hooks", "forwarding_hookimpl"]

_Class = TypeVar("_Class", bound=type[Any])


def forwarding_hookimpl(
    hook: str, *, to: str, awaits: bool = True, positional: bool = False
) -> Callable[..., Any]:
    """One ``@hookimpl`` method for ``hook`` that forwards its arguments to ``self.<to>``.

    Raises ValueError when ``hook`` is not an MQTT hook of :mod:`plugin_host.hooks.specs` or
    ``to`` is not a method name.
    """
    names = HOOK_ARGS.get(hook)
    if names is None:
        raise ValueError(f"{hook!r} is not an MQTT hook (see plugin_host.hooks.specs)")
    if not to.isidentifier():
        raise ValueError(f"{to!r} is not a method name")
    if positional:
        packed = "(" + "".join(f"{name}, " for name in names) + ")"
    else:
        packed = "{" + ", ".join(f"{name!r}: {name}" for name in names) + "}"
    call = f"self.{to}({hook!r}, {packed})"
    signature = f"{hook}({', '.join(('self', *names))})"
    if awaits:
        source = f"async def {signature}:\n    return await {call}\n"
    else:
        source = f"def {signature}:\n    return {call}\n"
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<forward_hooks: {hook}>", "exec"), namespace)
    function: Callable[..., Any] = namespace[hook]
    function.__doc__ = f"``{hook}``: its arguments, by name, to ``self.{to}``."
    marked: Callable[..., Any] = hookimpl(function)
    return marked


def forward_hooks(
    hooks: Iterable[str], *, to: str, awaits: bool = True, positional: bool = False
) -> Callable[[_Class], _Class]:
    """A class decorator adding a :func:`forwarding_hookimpl` for each of ``hooks``."""
    selected = sorted(hooks)

    def add(cls: _Class) -> _Class:
        for hook in selected:
            if hook in vars(cls):
                raise TypeError(f"{cls.__name__} defines {hook} itself: leave it out of hooks")
            function = forwarding_hookimpl(hook, to=to, awaits=awaits, positional=positional)
            function.__qualname__ = f"{cls.__qualname__}.{hook}"
            function.__module__ = cls.__module__
            setattr(cls, hook, function)
        return cls

    return add
