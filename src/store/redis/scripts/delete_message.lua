-- A member deletes a chat message: its own, or any as the room's owner.
-- ARGV: 3 token hash, 4 lease ttl ms, 5 the message's id.
-- Reply: {'unauthorized'} | {'not_found'} | {'forbidden'} | {'ok', the deletion's event id}.
local key, display = member_of(ARGV[3])
if not key then return {'unauthorized'} end
refresh_lease(key, ARGV[4])
local author = revisable(ARGV[5])
if not author then return {'not_found'} end
if author ~= display and redis.call('HGET', meta, 'owner') ~= key then return {'forbidden'} end
local id = append('delete:chat:success', author, nil, nil, ARGV[5])
revise(ARGV[5], id)
return {'ok', id}
