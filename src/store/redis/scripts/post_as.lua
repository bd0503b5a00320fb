-- A message of the server API: any name, member or not (a system or bot message).
-- ARGV: 3 display name, 4 message
if redis.call('EXISTS', meta) == 0 then return {'room_not_found'} end
return {'ok', append('create:chat:success', ARGV[3], ARGV[4])}
