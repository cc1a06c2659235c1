-- kv and json: count registrations per user in a node-local table, keep a JSON audit
-- trail of publishes in a bag table, and refuse a user after three registrations.

kv.ensure_table({name = "registrations", type = "set"})
kv.ensure_table({name = "audit", type = "duplicate_bag"})

function auth_on_register(reg)
    local seen = kv.lookup("registrations", reg.username)[1] or 0
    if seen >= 3 then
        return false
    end
    kv.insert("registrations", {[reg.username] = seen + 1})
    return true
end

function on_publish(pub)
    kv.insert("audit", {[pub.client_id] = json.encode({topic = pub.topic, qos = pub.qos,
                                                       size = #pub.payload})})
end

function auth_on_publish(pub)
    local doc = json.decode(pub.payload)
    if doc == nil then
        return true  -- not JSON: leave it
    end
    doc.checked = true
    doc.by = pub.username
    return {payload = json.encode(doc)}
end

hooks = {
    auth_on_register = auth_on_register,
    auth_on_publish = auth_on_publish,
    on_publish = on_publish,
}
