-- A member's removal, with the remover checked in the same step: a member's own token leaves
-- ('left'); the room owner's token, or the server API (no token), removes another member
-- ('kicked'), and with a ban keeps the name out for the room's lifetime ('banned').
-- ARGV: 3 username key of the member to remove, 4 room ttl secs, 5 'ban' or '',
--       6 the remover's token hash ('' = the server API), 7... the name's identity keys (a ban's)
local target, room_ttl, ban, by_token = ARGV[3], ARGV[4], ARGV[5] == 'ban', ARGV[6]
if by_token == '' then
  if redis.call('EXISTS', meta) == 0 then return {'room_not_found'} end
else
  local remover = member_of(by_token)
  if not remover then return {'unauthorized'} end
  if remover == target then
    if ban then return {'own_ban'} end
    return {'left', append('remove:member:success', remove_member(target, room_ttl), nil, 'left')}
  end
  if redis.call('HGET', meta, 'owner') ~= remover then return {'forbidden'} end
end
local is_member = redis.call('HEXISTS', members, target) == 1
-- Only the server API bans a name no member holds.
if not is_member and not (ban and by_token == '') then return {'not_member'} end
if ban then
  -- In meta, which lives and expires with the room: the ban lasts exactly as long.
  for i = 7, #ARGV do redis.call('HSET', meta, 'ban:' .. ARGV[i], '1') end
end
if not is_member then return {'banned_only'} end
local reason = 'kicked'
if ban then reason = 'banned' end
return {'removed', append('remove:member:success', remove_member(target, room_ttl), nil, reason)}
