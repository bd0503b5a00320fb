-- ARGV: 3 username key, 4 display name, 5 token hash, 6 lease ttl ms, 7 secret hash ('' = open),
--       8 unused (join's most members), 9... identity keys
if redis.call('EXISTS', meta) == 1 then return {'room_exists'} end
-- Keys of an earlier room with this id may outlive its meta by a moment while they expire.
redis.call('DEL', members, tokens, leases, log, online, names, holders)
local now = now_ms()
-- The creator owns the room until it is removed (membership.lua's remove_member).
redis.call('HSET', meta, 'created', now, 'owner', ARGV[3])
if ARGV[7] ~= '' then redis.call('HSET', meta, 'secret', ARGV[7]) end
add_member(ARGV[3], ARGV[4], ARGV[5], now + tonumber(ARGV[6]), {unpack(ARGV, 9)})
append('create:room:success', ARGV[4])
return {'ok', append('add:member:success', ARGV[4])}
