-- auth_on_subscribe: reject subscriptions to the "secret/#" tree (qos 128 for that slot),
-- cap every other subscription at QoS 1, keep the list one-to-one with the request.

local function allowed(topic)
    return not (topic == "secret" or string.sub(topic, 1, 7) == "secret/"
                or topic == "#" or topic == "+/#")
end

function auth_on_subscribe(sub)
    local topics = {}
    for i, entry in ipairs(sub.topics) do
        local topic, qos = entry[1], entry[2]
        if allowed(topic) then
            topics[i] = {topic, math.min(qos, 1)}
        else
            topics[i] = {topic, 128}
        end
    end
    return topics
end

function auth_on_subscribe_m5(sub)
    local topics = {}
    for i, entry in ipairs(sub.topics) do
        local topic, qos, opts = entry[1], entry[2][1], entry[2][2]
        if allowed(topic) then
            topics[i] = {topic, {math.min(qos, 1), opts}}
        else
            topics[i] = {topic, {135, opts}}
        end
    end
    return {topics = topics, properties = {p_reason_string = "checked by lua"}}
end

hooks = {
    auth_on_subscribe = auth_on_subscribe,
    auth_on_subscribe_m5 = auth_on_subscribe_m5,
}
