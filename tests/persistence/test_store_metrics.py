"""The message store's figures on ``/metrics`` (scraped over a real socket, parsed with
prometheus-client's parser) and in ``$SYS``, after real QoS 1 traffic to a persistent session."""

from __future__ import annotations

import ssl
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from plugin_host.config import load_config
from plugin_host.http import HTTPPool
from plugin_host.testing import open_client, run_broker

P = "plugin_host_store_"


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "broker.conf"
    path.write_text(
        "listener.tcp.default = 127.0.0.1:0\n"
        "listener.http.admin = 127.0.0.1:0\n"
        "allow_anonymous = on\n"
        f"persistence.dir = {tmp_path / 'data'}\n"
        "nodename = node-s\n" + extra
    )
    return path


async def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    # A plain-HTTP pool: a bare TLS context spares loading the system CAs.
    async with HTTPPool(size=1, tls=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)) as pool:
        response = await pool.request("GET", url + "/metrics")
    assert response.status == 200
    samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_store_figures_on_metrics_after_qos1_traffic(tmp_path: Path) -> None:
    async with run_broker(load_config(_config(tmp_path))) as running:
        url = running.info.admin.url()
        async with open_client(running.address, client_id="s", clean_start=False) as s:
            await s.subscribe("q", 1)
            await s.disconnect()
        async with open_client(running.address, client_id="p") as p:
            for i in range(50):
                await p.publish("q", b"m%d" % i, qos=1)  # returns once PUBACK'd: committed
        store = running.store
        await store.fold()
        m = await _scrape(url)

        def v(name: str, **labels: str) -> float:
            return m[(P + name, tuple(sorted(labels.items())))]

        stats = store.stats
        assert v("commits_total") == stats.commits >= 1
        assert v("changes_total") == stats.changes >= 50  # 50 queued messages, at least
        assert v("rows_journaled_total") >= 100  # a message row and a delivery row each
        assert v("journal_bytes_total") > 50 * 2
        assert v("commit_seconds_count") == stats.commits
        assert 0 < v("commit_seconds_sum") < 60
        assert (
            sum(
                v("commit_batches_total", changes=size)
                for size in ("1", "2-9", "10-99", "100-999", "1000+")
            )
            == stats.commits
        )
        assert v("max_batch_changes") >= 1
        assert v("folds_total") >= 1
        assert v("rows_folded_total") >= 100  # the 50 queued messages reached the tables
        assert v("fold_seconds_total") > 0
        assert v("write_failures_total") == 0
        assert v("pending_changes") == 0
        assert v("size_bytes") == store.backend.size() > 0

        # The subscriber takes its messages: they leave the store.
        async with open_client(running.address, client_id="s", clean_start=False) as s:
            await s.receive_many(50)
            await s.sync()
        await store.flush()
        await store.fold()
        after = await _scrape(url)
        assert after[(P + "changes_total", ())] >= v("changes_total") + 50
        assert after[(P + "folds_total", ())] > v("folds_total")


async def test_no_store_figures_with_persistence_off(tmp_path: Path) -> None:
    path = _config(tmp_path, "persistence = off\n")
    async with run_broker(load_config(path)) as running:
        m = await _scrape(running.info.admin.url())
    assert not [name for name, _ in m if name.startswith(P)]
    assert ("plugin_host_connects_total", ()) in m


async def test_store_figures_in_sys(tmp_path: Path) -> None:
    path = _config(tmp_path, "systree_interval = 100\n")  # milliseconds
    async with (
        run_broker(load_config(path)) as running,
        open_client(running.address, client_id="w", clean_start=False) as watcher,
    ):
        await watcher.subscribe([("$SYS/node-s/store/#", 0), ("q", 1)])
        async with open_client(running.address, client_id="p") as p:
            await p.publish("q", b"x", qos=1)
        got: dict[str, bytes] = {}
        commits = "$SYS/node-s/store/commits"
        with trio.fail_after(10):
            # (a tick published before the first commit says 0 commits: wait for a later one)
            while len(got) < 4 or int(got[commits]) < 1:
                message = await watcher.receive()
                if message.topic.startswith("$SYS/"):
                    got[message.topic] = message.payload
    assert set(got) == {
        f"$SYS/node-s/store/{name}" for name in ("commits", "changes", "pending", "size")
    }
    assert int(got["$SYS/node-s/store/size"]) > 0
    assert int(got["$SYS/node-s/store/commits"]) >= 1
    assert int(got["$SYS/node-s/store/pending"]) >= 0
