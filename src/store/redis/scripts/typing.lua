-- A member is typing. KEYS[first_own_key]: its throttle (keys.rs's typing_key).
-- ARGV: 3 token hash, 4 lease ttl ms, 5 throttle ms
-- Reply: {'unauthorized'} | {'ok', 1 (published) or 0 (dropped: the throttle runs)}
local key, display = member_of(ARGV[3])
if not key then return {'unauthorized'} end
refresh_lease(key, ARGV[4])
if not redis.call('SET', KEYS[first_own_key], '1', 'NX', 'PX', ARGV[5]) then return {'ok', 0} end
tell('typing', display)
return {'ok', 1}
