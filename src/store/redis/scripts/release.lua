-- This instance no longer holds a member. ARGV: 3 instance id, 4 username key
redis.call('ZREM', online, ARGV[4] .. '\31' .. ARGV[3])
return {'ok'}
