-- ARGV: 3 token hash, 4 username key of the member to remove, 5 room ttl secs
local key = member_of(ARGV[3])
if not key then return {'unauthorized'} end
if key ~= ARGV[4] then return {'forbidden'} end
local display = remove_member(key, ARGV[5])
return {'ok', append('remove:member:success', display, nil, 'left')}
