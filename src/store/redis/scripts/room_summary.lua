-- Read only: one room as the server API lists it.
-- Returns {'gone'}, or {'ok', members, members online now, last event id}.
if redis.call('EXISTS', meta) == 0 then return {'gone'} end
local seen, online_now = {}, 0
for _, holder in ipairs(redis.call('ZRANGEBYSCORE', online, now_ms(), '+inf')) do
  local key = string.match(holder, '^(.*)\31')
  if key and not seen[key] and redis.call('HEXISTS', members, key) == 1 then
    seen[key] = true
    online_now = online_now + 1
  end
end
return {'ok', redis.call('HLEN', members), online_now, redis.call('HGET', meta, 'last') or '0-0'}
