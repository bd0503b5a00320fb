-- Refreshes members held by live connections on one instance.
-- ARGV: 3 instance id, 4 lease ttl ms, 5 online ttl ms, 6... username keys
local now = now_ms()
local lease = now + tonumber(ARGV[4])
local online_until = now + tonumber(ARGV[5])
for i = 6, #ARGV do
  local key = ARGV[i]
  if redis.call('HEXISTS', members, key) == 1 then
    redis.call('ZADD', leases, 'GT', lease, key)
    redis.call('ZADD', online, online_until, key .. '\31' .. ARGV[3])
  end
end
-- Marks of other instances that stopped refreshing (they died) are cleared as they lapse.
redis.call('ZREMRANGEBYSCORE', online, '-inf', now)
return {'ok'}
