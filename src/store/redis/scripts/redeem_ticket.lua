-- Spends a stream ticket: it is deleted whatever follows, so it works at most once, and it
-- names a member only while that token is still a member's. KEYS[7]: the ticket's key.
-- ARGV: 3 lease ttl ms. GET then DEL in one script (not GETDEL) runs on any Redis version.
local token_hash = redis.call('GET', KEYS[7])
if not token_hash then return {'unauthorized'} end
redis.call('DEL', KEYS[7])
local key, display = member_of(token_hash)
if not key then return {'unauthorized'} end
refresh_lease(key, ARGV[3])
return {'ok', display}
