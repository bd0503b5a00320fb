-- ARGV: 3 username key, 4 display name, 5 token hash, 6 lease ttl ms,
--       7 the secret hash the caller checked ('' = the room was open), 8 most members,
--       9... identity keys
local room = redis.call('HMGET', meta, 'created', 'secret')
if not room[1] then return {'room_not_found'} end
if (room[2] or '') ~= ARGV[7] then return {'access_changed'} end
local identity_keys = {unpack(ARGV, 9)}
if name_banned(identity_keys) then return {'banned'} end
if name_taken(identity_keys) then return {'username_taken'} end
if redis.call('HLEN', members) >= tonumber(ARGV[8]) then return {'room_full'} end
add_member(ARGV[3], ARGV[4], ARGV[5], now_ms() + tonumber(ARGV[6]), identity_keys)
return {'ok', append('add:member:success', ARGV[4])}
