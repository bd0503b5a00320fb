-- ARGV: 3 token hash, 4 lease ttl ms
local key = member_of(ARGV[3])
if not key then return {'unauthorized'} end
refresh_lease(key, ARGV[4])
local online_now = {}
for _, holder in ipairs(redis.call('ZRANGEBYSCORE', online, now_ms(), '+inf')) do
  online_now[#online_now + 1] = string.match(holder, '^(.*)\31')
end
-- The owner's username key, '' when the room has none.
return {'ok', redis.call('HGETALL', members), online_now, redis.call('HGET', meta, 'owner') or ''}
