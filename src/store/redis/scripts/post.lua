-- KEYS[first_own_key..]: one idempotency key slot per message (unused when the message has no key).
-- ARGV: 3 token hash, 4 lease ttl ms, 5 idempotency ttl secs, then per message from 6 on:
-- the message, its idempotency key ('' = none) and the digest of its text ('' = no key).
-- A slot keeps '<event id> <digest>', not the message: the text is in the log already.
-- Reply: {'unauthorized'}, or {'ok', display name, then per message three entries:
-- 'new', id, '' | 'replayed', id, the stored text | 'key_reused', '', ''}: `answer` below,
-- decoded by replies.rs's post_answers.
local key, display = member_of(ARGV[3])
if not key then return {'unauthorized'} end

-- The text of a chat event still in the log, or nil once trimmed (also when the approximate
-- trim has not removed it yet: it is out of history all the same).
local function logged_text(id)
  local entry = redis.call('XRANGE', log, id, id)[1]
  if not entry then return nil end
  local oldest = oldest_kept()
  if oldest and id_before(id, oldest) then return nil end
  local fields = entry[2]
  for f = 1, #fields, 2 do
    if fields[f] == 'm' then return fields[f + 1] end
  end
  return nil
end

local reply = {'ok', display}
local function answer(kind, id, text)
  reply[#reply + 1] = kind
  reply[#reply + 1] = id
  reply[#reply + 1] = text
end

for i = 6, #ARGV, 3 do
  local message, idempotency_key, digest = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local slot = KEYS[first_own_key + (i - 6) / 3]
  local stored = idempotency_key ~= '' and redis.call('GET', slot)
  if stored then
    local id, kept_digest = string.match(stored, '^(%S+) (%x+)$')
    if not id then
      -- Kept by an earlier version: the first reply itself, as JSON.
      local first = cjson.decode(stored)
      answer('replayed', first.id, first.m)
    else
      local text = logged_text(id)
      if text then
        answer('replayed', id, text)
      elseif kept_digest == digest then
        -- Left the log, but the retry is the very message: it answers for itself.
        answer('replayed', id, message)
      else
        answer('key_reused', '', '')
      end
    end
  else
    local id = append('create:chat:success', display, message)
    if idempotency_key ~= '' then
      redis.call('SET', slot, id .. ' ' .. digest, 'EX', ARGV[5])
    end
    answer('new', id, '')
  end
end
-- After the appends, so that the clock comes with the last one's id (see `id_ms`).
refresh_lease(key, ARGV[4], appended_last and id_ms(appended_last))
return reply
