-- KEYS[7]: the idempotency key's slot (unused when ARGV[6] is '').
-- ARGV: 3 token hash, 4 message, 5 lease ttl ms, 6 idempotency key ('' = none), 7 its ttl secs
local key, display = member_of(ARGV[3])
if not key then return {'unauthorized'} end
refresh_lease(key, ARGV[5])
if ARGV[6] ~= '' then
  local stored = redis.call('GET', KEYS[7])
  if stored then return {'replayed', stored} end
end
local id = append('create:chat:success', display, ARGV[4])
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[7], cjson.encode({id = id, u = display, m = ARGV[4]}), 'EX', ARGV[7])
end
return {'ok', id, display}
