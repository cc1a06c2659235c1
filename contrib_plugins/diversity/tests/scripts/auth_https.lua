-- auth_on_register against an HTTPS credentials service, VerneMQ style.
--
-- The service sits behind a private CA and wants a client certificate (mutual TLS): the
-- pool says which CA to trust and which certificate to present. The settings module
-- (lib/settings.lua, next to this script) holds the URL and the file names.
local settings = require "lib.settings"

http.ensure_pool({
    pool_id = "auth_service",
    size = settings.pool_size or 50,
    cafile = settings.cafile,
    certfile = settings.certfile,
    keyfile = settings.keyfile,
    timeout_ms = 5000,
})

function auth_on_register(reg)
    local request = json.encode({
        client_id = reg.client_id,
        username = reg.username,
        password = obf.decrypt(reg.password),
        peer = reg.addr .. ":" .. reg.port,
    })
    local ret = http.post("auth_service", settings.auth_url, request,
                          {["content-type"] = "application/json"})
    if not ret then
        log.error("credentials service unreachable for " .. reg.client_id)
        return false
    end
    if ret.status ~= 200 then
        return false
    end
    local answer = json.decode(http.body(ret.ref))
    if answer == nil or answer.result ~= "ok" then
        return false
    end
    if answer.max_inflight then
        return {max_inflight_messages = answer.max_inflight}
    end
    return true
end

hooks = {
    auth_on_register = auth_on_register,
    auth_on_register_m5 = auth_on_register,
}
