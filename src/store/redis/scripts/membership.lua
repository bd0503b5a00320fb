-- Membership changes, for the scripts that add or remove members (create, join, remove,
-- sweep_room): mod.rs's room_script! puts this after prelude.lua in those only, as every
-- function defined costs each run of a script (a closure made per call).

-- A `members` record, '<64 hex token hash>:<display name>'. replies.rs's
-- member_record_display is the one Rust reader of it.
local function member_record(token_hash, display)
  return token_hash .. ':' .. display
end

local function record_token_hash(record)
  return string.sub(record, 1, 64)
end

-- Whether a member holds one of these identity keys. Members from before the names hash are
-- found by their username key alone.
local function name_taken(identity_keys)
  for _, identity_key in ipairs(identity_keys) do
    if redis.call('HEXISTS', names, identity_key) == 1
        or redis.call('HEXISTS', members, identity_key) == 1 then
      return true
    end
  end
  return false
end

-- Whether a banned name holds one of these identity keys (bans are kept in meta, see prelude).
local function name_banned(identity_keys)
  for _, identity_key in ipairs(identity_keys) do
    if redis.call('HEXISTS', meta, 'ban:' .. identity_key) == 1 then return true end
  end
  return false
end

-- identity_keys: the name's, its username key first.
local function add_member(key, display, token_hash, lease_deadline, identity_keys)
  redis.call('HSET', members, key, member_record(token_hash, display))
  redis.call('HSET', tokens, token_hash, key)
  redis.call('ZADD', leases, lease_deadline, key)
  local held = table.concat(identity_keys, '\31')
  for _, identity_key in ipairs(identity_keys) do
    redis.call('HSET', names, identity_key, held)
  end
  -- A room with members never expires.
  for i = 1, room_key_count do redis.call('PERSIST', KEYS[i]) end
end

-- Removes a member, and the room's owner with it if it was that one (the room then has no
-- owner: `owner` is set by create.lua only); when the room becomes empty, its keys start
-- their ROOM_TTL countdown.
local function remove_member(key, room_ttl_secs)
  local record = redis.call('HGET', members, key)
  if not record then return nil end
  redis.call('HDEL', members, key)
  if redis.call('HGET', meta, 'owner') == key then redis.call('HDEL', meta, 'owner') end
  redis.call('HDEL', tokens, record_token_hash(record))
  redis.call('ZREM', leases, key)
  -- Its online marks go silently: its removal tells the room.
  local holding = redis.call('HGET', holders, key)
  if holding then
    for instance in string.gmatch(holding, '[^,]+') do
      redis.call('ZREM', online, key .. '\31' .. instance)
    end
    redis.call('HDEL', holders, key)
  end
  local held = redis.call('HGET', names, key)
  if held then
    for identity_key in string.gmatch(held, '[^\31]+') do
      redis.call('HDEL', names, identity_key)
    end
  end
  if redis.call('HLEN', members) == 0 and tonumber(room_ttl_secs) > 0 then
    for i = 1, room_key_count do redis.call('EXPIRE', KEYS[i], room_ttl_secs) end
  end
  return record_display(record)
end
