-- The server API deletes a room: every key the scripts know it by (its bans are in meta), and one `room:deleted` on
-- its channel (not in any log: the log goes too) whose id follows the room's last event, so
-- each instance's hub delivers it after everything the room published before.
if redis.call('EXISTS', meta) == 0 then return {'room_not_found'} end
local last = redis.call('HGET', meta, 'last') or '0-0'
local ms, seq = string.match(last, '^(%d+)-(%d+)$')
redis.call('DEL', unpack(KEYS, 1, room_key_count))
publish(cjson.encode({id = ms .. '-' .. string.format('%d', tonumber(seq) + 1), p = last, t = 'room:deleted', u = ''}))
return {'ok'}
