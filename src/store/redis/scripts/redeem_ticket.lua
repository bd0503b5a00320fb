-- Spends a stream ticket: it is deleted whatever follows, so it works at most once, and it
-- names a member only while that token is still a member's. KEYS[first_own_key]: the ticket's key.
-- ARGV: 3 lease ttl ms. GET then DEL in one script (not GETDEL) runs on any Redis version.
local token_hash = redis.call('GET', KEYS[first_own_key])
if not token_hash then return {'unauthorized'} end
redis.call('DEL', KEYS[first_own_key])
local key, display = member_of(token_hash)
if not key then return {'unauthorized'} end
refresh_lease(key, ARGV[3])
return {'ok', display}
