"""plugin-host: an MQTT broker on Trio whose every decision is a pluggy hook.

Plugin authors need only two names from this package::

    from plugin_host import hookimpl, Deny

See the plugin author guide in the documentation.
"""

from plugin_host.hooks.markers import hookimpl, hookspec
from plugin_host.hooks.results import Deny

__version__ = "0.1.0"

__all__ = ["Deny", "__version__", "hookimpl", "hookspec"]
