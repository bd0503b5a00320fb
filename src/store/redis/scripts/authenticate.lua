-- ARGV: 3 token hash, 4 lease ttl ms
local key, display = member_of(ARGV[3])
if not key then return {'unauthorized'} end
refresh_lease(key, ARGV[4])
return {'ok', display}
