-- Issues a stream ticket for the member whose token this is. KEYS[first_own_key]: the ticket's key
-- (room:{id}:ticket:<ticket hash>). ARGV: 3 token hash, 4 lease ttl ms, 5 ticket ttl secs
local key = member_of(ARGV[3])
if not key then return {'unauthorized'} end
refresh_lease(key, ARGV[4])
redis.call('SET', KEYS[first_own_key], ARGV[3], 'EX', ARGV[5])
return {'ok'}
