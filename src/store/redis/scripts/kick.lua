-- The server API removes a member, and with a ban keeps its name out for the room's lifetime.
-- ARGV: 3 username key, 4 room ttl secs, 5 reason ('kicked' or 'banned'),
--       6... the name's identity keys (a ban's)
if redis.call('EXISTS', meta) == 0 then return {'room_not_found'} end
local banned = ARGV[5] == 'banned'
if banned then
  -- In meta, which lives and expires with the room: the ban lasts exactly as long.
  for i = 6, #ARGV do redis.call('HSET', meta, 'ban:' .. ARGV[i], '1') end
end
local display = remove_member(ARGV[3], ARGV[4])
if not display then
  if banned then return {'banned_only'} end
  return {'not_member'}
end
return {'ok', append('remove:member:success', display, nil, ARGV[5])}
