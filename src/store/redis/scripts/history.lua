-- ARGV: 3 token hash, 4 lease ttl ms, 5 before ('' = newest), 6 how many chat messages (+1)
-- Reply: {'ok', entries newest first}, each a stream entry {id, fields} with the message's
-- text as last edited and, for an edited message, a third element: its last edit's id.
-- Deleted messages are left out.
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
-- A room whose messages were never edited or deleted costs no look-up per message.
local revised = tonumber(redis.call('HGET', meta, 'revs') or '0') > 0

-- The entry as history shows it, or nil for a deleted message.
local function shown(entry)
  local revision = revised and redis.call('HGET', meta, 'rev:' .. entry[1])
  if not revision then return entry end
  local edit_id, text = edited(revision)
  if not edit_id then return nil end
  local fields = entry[2]
  for f = 1, #fields, 2 do
    if fields[f] == 'm' then fields[f + 1] = text end
  end
  return {entry[1], fields, edit_id}
end

-- Membership events are interleaved with chat: scan back in batches until enough chat is found.
while #found < want do
  local batch = redis.call('XREVRANGE', log, cursor, floor, 'COUNT', 256)
  for _, entry in ipairs(batch) do
    local fields = entry[2]
    if fields[2] == 'create:chat:success' then
      local message = shown(entry)
      if message then
        found[#found + 1] = message
        if #found == want then break end
      end
    end
  end
  if #batch < 256 then break end
  cursor = '(' .. batch[#batch][1]
end
return {'ok', found}
