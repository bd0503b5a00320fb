-- KEYS[first_own_key..]: one idempotency key slot per message (unused when the message has no key).
-- ARGV: 3 token hash, 4 lease ttl ms, 5 idempotency ttl secs, then per message from 6 on:
-- the message and its idempotency key ('' = none).
-- Reply: {'unauthorized'}, or {'ok', display name, then per message 'new', id or
-- 'replayed', the stored post}.
local key, display = member_of(ARGV[3])
if not key then return {'unauthorized'} end
refresh_lease(key, ARGV[4])
local reply = {'ok', display}
for i = 6, #ARGV, 2 do
  local message, idempotency_key, slot = ARGV[i], ARGV[i + 1], KEYS[first_own_key + (i - 6) / 2]
  local stored = idempotency_key ~= '' and redis.call('GET', slot)
  if stored then
    reply[#reply + 1] = 'replayed'
    reply[#reply + 1] = stored
  else
    local id = append('create:chat:success', display, message)
    if idempotency_key ~= '' then
      redis.call('SET', slot, cjson.encode({id = id, u = display, m = message}), 'EX', ARGV[5])
    end
    reply[#reply + 1] = 'new'
    reply[#reply + 1] = id
  end
end
return reply
