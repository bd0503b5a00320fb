-- ARGV: 3 token hash, 4 lease ttl ms, 5 before ('' = newest), 6 how many chat messages (+1)
local key = member_of(ARGV[3])
if not key then return {'unauthorized'} end
refresh_lease(key, ARGV[4])
local want = tonumber(ARGV[6])
local found = {}
local cursor = '+'
-- Nothing comes before 0-0 (and Redis refuses the range '(0-0' as an invalid end id).
if ARGV[5] == '0-0' then return {'ok', found} end
if ARGV[5] ~= '' then cursor = '(' .. ARGV[5] end
-- Events the approximate trim left behind the last history_limit are not history.
local floor = oldest_kept() or '-'
-- Membership events are interleaved with chat: scan back in batches until enough chat is found.
while #found < want do
  local batch = redis.call('XREVRANGE', log, cursor, floor, 'COUNT', 256)
  for _, entry in ipairs(batch) do
    local fields = entry[2]
    if fields[2] == 'create:chat:success' then
      found[#found + 1] = entry
      if #found == want then break end
    end
  end
  if #batch < 256 then break end
  cursor = '(' .. batch[#batch][1]
end
return {'ok', found}
