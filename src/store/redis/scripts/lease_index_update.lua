-- The lease index (KEYS[1], zset room id -> when to sweep it) is written by sweepers only
-- when the score is still the one they read (ARGV[2]): a join that marked the room for an
-- early sweep in between wins. ARGV: 1 room id, 2 score read, 3 new score ('' = remove: the
-- room is gone).
-- KEYS[2], when given, is the room index bucket beside it (the same hash tag): a gone room
-- leaves it, a live one is put (back) in it, which is how rooms created before the room index
-- existed, or whose entry a racing read removed, come to be listed.
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not current or tonumber(current) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[1]) end
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  if KEYS[2] then redis.call('ZADD', KEYS[2], 0, ARGV[1]) end
end
return 1
