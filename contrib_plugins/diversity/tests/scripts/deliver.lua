-- on_deliver: stamp the payload of "news/#" deliveries with the receiving client id.
-- Returning nothing leaves other deliveries alone.

function on_deliver(msg)
    if string.sub(msg.topic, 1, 5) == "news/" then
        return {payload = "[" .. msg.client_id .. "] " .. msg.payload}
    end
end

function on_deliver_m5(msg)
    if string.sub(msg.topic, 1, 5) == "news/" then
        return {
            payload = "[" .. msg.client_id .. "] " .. msg.payload,
            properties = {p_user_property = {{stamp = "lua"}}},
        }
    end
end

hooks = {
    on_deliver = on_deliver,
    on_deliver_m5 = on_deliver_m5,
}
