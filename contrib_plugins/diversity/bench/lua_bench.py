"""Benchmarks of the diversity plugin, run by the shared harness (``bench/compare.py``).

This adds three variants to the harness's list and hands over to it:

* ``plugin-host+lua``: one trivial Lua ``auth_on_publish`` hook (``return true``), to compare
  with ``plugin-host`` (no hook) and ``plugin-host+pyhook`` (the same hook in Python);
* ``plugin-host+lua-https``: ``auth_on_register`` checks every client's credentials with an
  HTTPS request (private CA, client certificate) to a helper service started for the run;
* ``plugin-host+lua-https-latency``: the same with 100 ms of service latency.

Run from the repository root::

    .venv/bin/python contrib_plugins/diversity/bench/lua_bench.py \\
        --brokers plugin-host,plugin-host+pyhook,plugin-host+lua --scenarios fanin-qos0 --repeat 3
    .venv/bin/python contrib_plugins/diversity/bench/lua_bench.py \\
        --brokers plugin-host,plugin-host+lua-https,plugin-host+lua-https-latency \\
        --scenarios conn-storm --username bench --password bench-pw

Any other ``compare.py`` option works the same way (``--list``, ``--duration`` ...).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "bench"))

import brokers  # noqa: E402  (the harness is a directory of scripts, not a package)
import compare  # noqa: E402

TRIVIAL_HOOK = """\
-- The cost of calling one Lua hook per message.
hooks = {
    auth_on_publish = function(pub) return true end,
    auth_on_publish_m5 = function(pub) return true end,
}
"""

HTTPS_AUTH = """\
-- auth_on_register over HTTPS: a private CA and a client certificate (mutual TLS).
http.ensure_pool({
    pool_id = "auth", size = 50, timeout_ms = 10000,
    cafile = "${workdir}/tls/ca.pem",
    certfile = "${workdir}/tls/client.pem",
    keyfile = "${workdir}/tls/client.key",
})
function auth_on_register(reg)
    if reg.client_id == "bench-ready-probe" then
        return true  -- the harness's readiness probe has no credentials
    end
    local body = json.encode({username = reg.username, password = obf.decrypt(reg.password)})
    local r = http.post("auth", "${auth_url}", body, {["content-type"] = "application/json"})
    return r ~= false and r.status == 200
end
hooks = {auth_on_register = auth_on_register, auth_on_register_m5 = auth_on_register}
"""

#: The credentials service: trio + the project's test HTTP server, HTTPS with mutual TLS.
SERVICE = """\
import sys, json, trio, trustme
from plugin_host.testing.http_server import Response, open_http_server, server_tls_context

workdir, delay = sys.argv[1], float(sys.argv[2])

async def check(request):
    doc = json.loads(request.body)
    ok = (doc.get("username"), doc.get("password")) == ("bench", "bench-pw")
    return Response(status=200 if ok else 403, body=b"{}")

async def main():
    ca = trustme.CA()
    client = ca.issue_cert("bench-client")
    ca.cert_pem.write_to_path(f"{workdir}/tls/ca.pem")
    client.cert_chain_pems[0].write_to_path(f"{workdir}/tls/client.pem")
    client.private_key_pem.write_to_path(f"{workdir}/tls/client.key")
    tls = server_tls_context(ca, "127.0.0.1", "localhost", require_client_cert=True)
    async with open_http_server(check, tls=tls) as server:
        server.delay = delay
        with open(f"{workdir}/tls/ready", "w") as f:  # tells the harness the port: ready
            f.write(str(server.port))
        await trio.sleep_forever()

trio.run(main)
"""


def _https_service(delay: float):
    @contextlib.contextmanager
    def setup(ctx: brokers.RunContext) -> Iterator[None]:
        (ctx.workdir / "tls").mkdir(exist_ok=True)
        script = ctx.workdir / "auth_service.py"
        script.write_text(SERVICE)
        ctx.spawn_helper(
            [sys.executable, str(script), str(ctx.workdir), str(delay)], "auth_service.log"
        )
        ready = ctx.workdir / "tls" / "ready"
        deadline = time.monotonic() + 30
        while not ready.exists() or not ready.read_text():
            if time.monotonic() > deadline:
                raise brokers.BrokerError("the HTTPS auth service did not start (auth_service.log)")
            time.sleep(0.05)  # a helper process: nothing to wait on but its file
        ctx.values["auth_url"] = f"https://localhost:{ready.read_text()}/auth"
        yield

    return setup


#: The same trivial hook in Python, reading every argument as the Lua hook's table does: the
#: broker then builds the hook's argument dict per message too (``plugin-host+pyhook`` reads
#: none), so this is the floor of any hook that looks at the message.
PYHOOK_ARGS = '''\
"""A trivial auth_on_publish hook that takes every argument (as the Lua hook's table does)."""

from plugin_host import hookimpl


@hookimpl
def auth_on_publish(username, mountpoint, client_id, qos, topic, payload, retain):
    return True
'''

LUA_CONF = brokers.PLUGIN_HOST_CONF + "diversity.script_dir = ${workdir}/lua\n"
AUTH_CONF = LUA_CONF.replace("allow_anonymous = on", "allow_anonymous = off")

brokers.VARIANTS.extend(
    [
        brokers.Variant(
            name="plugin-host+pyhook-args",
            family="plugin-host",
            command=lambda ctx: brokers._plugin_host_command(
                ctx, "--plugins-dir", str(ctx.workdir / "plugins")
            ),
            config_name="plugin-host.conf",
            config_text=brokers.PLUGIN_HOST_CONF,
            files={"plugins/bench_auth_args.py": PYHOOK_ARGS},
            ratio_to=("plugin-host",),
            default=False,
            description="plugin-host with a trivial Python auth_on_publish hook taking every "
            "argument",
        ),
        brokers.Variant(
            name="plugin-host+lua",
            family="plugin-host",
            command=brokers._plugin_host_command,
            config_name="plugin-host.conf",
            config_text=LUA_CONF,
            files={"lua/bench.lua": TRIVIAL_HOOK},
            ratio_to=("plugin-host", "plugin-host+pyhook"),
            default=False,
            description="plugin-host with one trivial Lua auth_on_publish hook (diversity)",
        ),
        *(
            brokers.Variant(
                name=name,
                family="plugin-host",
                command=brokers._plugin_host_command,
                config_name="plugin-host.conf",
                config_text=AUTH_CONF,
                files={"lua/auth.lua": HTTPS_AUTH},
                setup=_https_service(delay),
                ratio_to=("plugin-host",),
                default=False,
                description=f"auth_on_register in Lua over HTTPS (mTLS), service latency "
                f"{delay * 1000:.0f} ms",
            )
            for name, delay in (
                ("plugin-host+lua-https", 0.0),
                ("plugin-host+lua-https-latency", 0.1),
            )
        ),
    ]
)

if __name__ == "__main__":
    sys.exit(compare.main(sys.argv[1:]))
