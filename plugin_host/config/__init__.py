"""Load ``.toml`` and vernemq.conf-style ``.conf`` files into one validated :class:`Config`.

The public API:

* :func:`load_config` - read a file (or none: a local development broker), apply command-line
  :class:`ConfigOverrides`, return a :class:`~plugin_host.settings.Config`. Any problem raises
  :class:`~plugin_host.settings.ConfigError` reading ``file:line: key: reason``.
* :func:`apply_schema` - type and validate one plugin's section against the
  :class:`~plugin_host.settings.Key` list the plugin declares (called by the plugin manager).
* :func:`render_config` - the effective configuration as ``.conf`` text, secrets shown as ``***``
  (``plugin-host check-config``).

Both file formats become the same list of *entries* (dotted key, raw value, origin) first; all
validation happens on entries, so a key means the same thing in both formats. The key reference
for operators is ``docs/configuration.md``; keep it in step with the key tables.

The modules, in the order a file goes through them:

* ``values`` - value parsers and formatters (bool, int, duration, size, period, path, address);
* ``conf_file`` - the vernemq.conf reader; ``toml_file`` - the TOML reader, with
  ``toml_lines`` - the scanner that finds the line of every TOML key;
* ``entries`` - :class:`~plugin_host.config.entries.Entry` and key aliasing;
* ``keys`` - the broker-wide key table, VerneMQ plugin aliases, ignored VerneMQ keys;
* ``listeners`` - the listener option table and the assembly of listeners;
* ``builder`` - entries -> Config; ``loader`` - :func:`load_config` and :func:`log_warnings`;
* ``schema`` - :func:`apply_schema`; ``render`` - :func:`render_config`.
"""

from plugin_host.config.keys import IGNORED_KEYS, IGNORED_LISTENER_OPTIONS, PLUGIN_ALIASES
from plugin_host.config.listeners import DEFAULT_LISTEN, LISTENER_KINDS, check_plugin_chains
from plugin_host.config.loader import ConfigOverrides, load_config, log_warnings
from plugin_host.config.render import render_config
from plugin_host.config.schema import apply_schema
from plugin_host.config.values import (
    parse_address,
    parse_bool,
    parse_duration,
    parse_enum,
    parse_float,
    parse_int,
    parse_list,
    parse_path,
    parse_size,
    parse_str,
)

__all__ = [
    "DEFAULT_LISTEN",
    "IGNORED_KEYS",
    "IGNORED_LISTENER_OPTIONS",
    "LISTENER_KINDS",
    "PLUGIN_ALIASES",
    "ConfigOverrides",
    "apply_schema",
    "check_plugin_chains",
    "load_config",
    "log_warnings",
    "parse_address",
    "parse_bool",
    "parse_duration",
    "parse_enum",
    "parse_float",
    "parse_int",
    "parse_list",
    "parse_path",
    "parse_size",
    "parse_str",
    "render_config",
]
