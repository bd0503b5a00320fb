-- Times out the members whose lease has lapsed. ARGV: 3 room ttl secs
-- Returns {'gone'} when the room no longer exists, else {'ok', timed out, next deadline or ''}.
if redis.call('EXISTS', meta) == 0 then return {'gone'} end
local timed_out = 0
for _, key in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now_ms())) do
  local display = remove_member(key, ARGV[3])
  redis.call('ZREM', leases, key)
  if display then
    append('remove:member:success', display, nil, 'timeout')
    timed_out = timed_out + 1
  end
end
local next_deadline = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')[2] or ''
return {'ok', timed_out, next_deadline}
