-- The lease index (KEYS[1], zset room id -> when to sweep it) is written by sweepers only
-- when the score is still the one they read (ARGV[2]): a join that marked the room for an
-- early sweep in between wins. ARGV: 1 room id, 2 score read, 3 new score ('' = remove).
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not current or tonumber(current) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
