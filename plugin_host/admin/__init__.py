"""Administration of a running broker: HTTP listeners, metrics, the admin API, ``$SYS``.

* :mod:`plugin_host.admin.serving`: the ``http``/``https`` listeners (hypercorn, trio worker)
  and the ``$SYS`` publisher, started by the server (:func:`serve_admin`).
* :mod:`plugin_host.admin.app`: the ASGI application (``/health``, ``/metrics``, ``/api/v1``).
* :mod:`plugin_host.admin.service`: the admin operations, independent of HTTP.
* :mod:`plugin_host.admin.metrics`: Prometheus families read from the broker's counters at
  scrape time; one registry per broker; plugins add theirs with ``plugin_host_metrics()``.
* :mod:`plugin_host.admin.systree`: the ``$SYS/<nodename>/...`` topics.
* :mod:`plugin_host.admin.client` and :mod:`plugin_host.admin.commands`: ``plugin-host admin``.

User documentation: ``docs/admin.md`` and ``docs/metrics.md``.
"""
