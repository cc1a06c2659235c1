"""The pluggy markers of the ``plugin_host`` project (entry-point group of the same name)."""

import pluggy

PROJECT = "plugin_host"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
