-- Refreshes members held by live connections on one instance, and tells the room who came
-- online here first and who went offline because every mark of theirs lapsed.
-- ARGV: 3 instance id, 4 lease ttl ms, 5 online ttl ms, 6... username keys
-- Reply: {'ok', presence events told}
local now = now_ms()
local lease = now + tonumber(ARGV[4])
local online_until = now + tonumber(ARGV[5])
-- Marks of instances that stopped refreshing (they died) go first: a member held here whose
-- own mark lapsed (this instance refreshed late) comes back below, and nothing is told of it.
local gone, gone_set = clear_lapsed(now)
for i = 6, #ARGV do
  local key = ARGV[i]
  if redis.call('HEXISTS', members, key) == 1 then
    redis.call('ZADD', leases, 'GT', lease, key)
    redis.call('ZADD', online, online_until, key .. '\31' .. ARGV[3])
    if add_holder(key, ARGV[3]) then
      if gone_set[key] then gone_set[key] = nil else tell_presence(key, true) end
    end
  end
end
for _, key in ipairs(gone) do
  if gone_set[key] then tell_presence(key, false) end
end
return {'ok', told and #told or 0}
