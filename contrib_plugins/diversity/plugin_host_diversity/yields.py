"""Can a script yield? Decided once per script, from the names its source uses.

A hook call runs in a coroutine only so that a module function doing I/O can yield to the
trio driver (``lua/prelude.lua``). A script that cannot reach anything yielding does not need
one: its calls run on the state's main thread (``plain`` entries, see
:meth:`LuaState.define <plugin_host_diversity.runtime.LuaState.define>`), which costs less per
call.

Script code reaches globals only by name, so a script that never *names* a global able to
yield (:data:`YIELDING_NAMES`: the modules and base functions of the prelude that yield, and
every way to reach globals indirectly) cannot yield. The check reads the identifiers outside
comments and strings; it is conservative: a field or local that happens to have one of these
names (``t.http``, ``local load``) also counts, and so does anything the scanner does not
understand (an unterminated string or comment leaves its text scanned as code).
"""

from __future__ import annotations

import re

__all__ = ["YIELDING_NAMES", "may_yield"]

#: Names through which script code can reach a function that yields: the I/O modules
#: (``http``, ``bcrypt.hashpw``, ``vmq_api``), the base functions that read files or load
#: code (``require``, ``dofile``, ``loadfile``, ``load``), ``coroutine`` (``yield``), and the
#: indirect ways to any global (``_G``, ``_ENV``, ``package.loaded``).
YIELDING_NAMES = frozenset(
    {
        "http",
        "bcrypt",
        "vmq_api",
        "require",
        "dofile",
        "loadfile",
        "load",
        "coroutine",
        "_G",
        "_ENV",
        "package",
    }
)

# One token per match; only NAME matters. Long brackets ([[...]], [==[...]==]) and comments
# come first so that their text is skipped; numbers so that "0x1p4" is not read as a name.
_TOKENS = re.compile(
    rb"""
      --\[(?P<ceq>=*)\[.*?\](?P=ceq)\]          # long comment
    | --[^\n]*                                  # line comment
    | \[(?P<seq>=*)\[.*?\](?P=seq)\]            # long string
    | "(?:\\.|[^"\\\n])*"                       # quoted strings (escapes, \z, \<newline>)
    | '(?:\\.|[^'\\\n])*'
    | 0[xX][0-9a-fA-F.]*(?:[pP][+-]?[0-9]+)?     # numbers
    | [0-9][0-9.]*(?:[eE][+-]?[0-9]+)?
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE | re.DOTALL,
)

_YIELDING = frozenset(name.encode() for name in YIELDING_NAMES)


def may_yield(source: bytes) -> bool:
    """True when the Lua ``source`` names something that can yield (see the module text)."""
    for match in _TOKENS.finditer(source):
        name = match.group("name")
        if name is not None and name in _YIELDING:
            return True
    return False
