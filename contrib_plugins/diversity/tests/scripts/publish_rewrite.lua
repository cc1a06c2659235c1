-- auth_on_publish: allow everything, rewrite the payload of "shout/#" messages to upper
-- case, move "old/<x>" to "new/<x>"; MQTT 5: tag the message with a user property.

function auth_on_publish(pub)
    if string.sub(pub.topic, 1, 6) == "shout/" then
        return {payload = string.upper(pub.payload)}
    end
    local rest = string.match(pub.topic, "^old/(.+)$")
    if rest then
        return {topic = "new/" .. rest, qos = 0}
    end
    return true
end

function auth_on_publish_m5(pub)
    if string.sub(pub.topic, 1, 6) == "shout/" then
        return {
            payload = string.upper(pub.payload),
            properties = {p_user_property = {{checked_by = "lua"}}, p_content_type = "text/upper"},
        }
    end
    return true
end

hooks = {
    auth_on_publish = auth_on_publish,
    auth_on_publish_m5 = auth_on_publish_m5,
}
