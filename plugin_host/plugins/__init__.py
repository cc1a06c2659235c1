"""The plugin manager and the built-in plugins.

* :mod:`plugin_host.plugins.manager` - :class:`~plugin_host.plugins.manager.PluginManager`:
  discovery, configuration, registration, lifespans, the dispatcher;
* :mod:`plugin_host.plugins.discovery` - entry points and ``--plugins-dir`` files;
* :mod:`plugin_host.plugins.lifespans` - the per-plugin ``host`` and lifespan handling;
* :mod:`plugin_host.plugins.builtin` - ``passwd`` and ``acl`` (registered through this
  distribution's own entry points, like any third-party plugin);
* :mod:`plugin_host.plugins.commands` - ``plugin-host plugins`` and ``plugin-host passwd``.
"""
