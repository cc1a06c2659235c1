-- auth_on_register fills the auth cache with ACLs, like VerneMQ's bundled database scripts:
-- publish/subscribe are then decided by the cache alone (the hooks below say false).

local users = {
    alice = {
        password = "alice-pw",
        publish_acl = {
            {pattern = "devices/%u/%c/+"},
            {pattern = "mp/%m/status", max_qos = 1},
            {pattern = "limited/#", max_qos = 1, max_payload_size = 5, allowed_retain = false},
            {pattern = "rewrite/me", modifiers = {topic = "rewritten/topic", payload = "changed", qos = 1}},
        },
        subscribe_acl = {
            {pattern = "devices/%u/#"},
            {pattern = "broadcast/+", max_qos = 1},
            {pattern = "alias/in", modifiers = {{"alias/out", 1}}},
        },
    },
}

function auth_on_register(reg)
    local user = users[reg.username]
    if user == nil then
        return nil  -- not ours: ask the next script / plugin
    end
    if obf.decrypt(reg.password) ~= user.password then
        return false
    end
    auth_cache.insert(reg.mountpoint, reg.client_id, reg.username,
                      user.publish_acl, user.subscribe_acl)
    return true
end

function auth_on_publish(pub)
    return false
end

function auth_on_subscribe(sub)
    return false
end

hooks = {
    auth_on_register = auth_on_register,
    auth_on_register_m5 = auth_on_register,
    auth_on_publish = auth_on_publish,
    auth_on_subscribe = auth_on_subscribe,
    on_client_gone = function(c) end,
    on_client_offline = function(c) end,
}
