-- What became of chat messages after they were posted, for the scripts that edit, delete or
-- show them (edit_message, delete_message, history): mod.rs's room_script! puts this after
-- prelude.lua in those only.
--
-- In meta (see prelude.lua): `rev:<message id>` is '<edit id> <text>' for a message last
-- edited by the `update:chat:success` <edit id>, or '<deletion id>' alone once the
-- `delete:chat:success` <deletion id> deleted it (a message is never blank, so the two cannot
-- be confused). `revs` counts the rev: fields written since the last prune, at least as many
-- as there are: revisions of messages trimmed from the log are pruned once there are twice
-- history_limit, which bounds them like the log and costs each revision O(1) on average.

-- A revision's edit id and text; nil for a deletion.
local function edited(revision)
  return string.match(revision, '^(%d+%-%d+) (.*)$')
end

-- The chat message `id` as it stands, if the room keeps it and it was not deleted: its author,
-- its text and the id of its last edit (nil when never edited). Nil for anything else: an
-- unknown id, another kind of event, one trimmed from history (also when the approximate trim
-- has not removed it yet), a deleted message.
local function revisable(id)
  local entry = redis.call('XRANGE', log, id, id)[1]
  if not entry then return nil end
  local oldest = oldest_kept()
  if oldest and id_before(id, oldest) then return nil end
  local kind, author, text
  local fields = entry[2]
  for f = 1, #fields, 2 do
    local name, value = fields[f], fields[f + 1]
    if name == 't' then kind = value elseif name == 'u' then author = value elseif name == 'm' then text = value end
  end
  if kind ~= 'create:chat:success' then return nil end
  local revision = redis.call('HGET', meta, 'rev:' .. id)
  if not revision then return author, text, nil end
  local edit_id, edited_text = edited(revision)
  if not edit_id then return nil end
  return author, edited_text, edit_id
end

-- Drops the revisions of messages the log no longer holds.
local function prune_revisions()
  local oldest = oldest_kept() or (redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1] or {})[1]
  local kept = 0
  for _, field in ipairs(redis.call('HKEYS', meta)) do
    local id = string.match(field, '^rev:(.+)$')
    if id then
      if oldest == nil or id_before(id, oldest) then
        redis.call('HDEL', meta, field)
      else
        kept = kept + 1
      end
    end
  end
  redis.call('HSET', meta, 'revs', kept)
end

-- Records what became of the message `id` (see the top of this file).
local function revise(id, revision)
  if redis.call('HSET', meta, 'rev:' .. id, revision) == 0 then return end
  if redis.call('HINCRBY', meta, 'revs', 1) > 2 * tonumber(history_limit) then
    prune_revisions()
  end
end
