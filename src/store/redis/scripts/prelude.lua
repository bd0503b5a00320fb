-- Shared by every room script (concatenated in front of each one by redis/mod.rs).
--
-- KEYS of every room script, all under the room's hash tag so one script touches one slot:
--   1 room:{id}:meta     hash: created, secret (PHC hash, absent when open), last (last event id),
--                        ban:<identity key> -> '1' for each identity key of a banned name (in
--                        meta, which lives exactly as long as the room: a key of their own
--                        would be missing in most rooms, and a script naming a missing key is
--                        refused while its slot migrates)
--   2 room:{id}:members  hash: username key -> <64 hex token hash>:<display name>
--   3 room:{id}:tokens   hash: token hash -> username key
--   4 room:{id}:leases   zset: username key -> lease deadline (ms, Redis clock)
--   5 room:{id}:log      stream: the room's events
--   6 room:{id}:online   zset: <username key>\31<instance> -> presence deadline (ms)
--   7 room:{id}:names    hash: identity key -> the holder's identity keys, \31-separated, its
--                        username key first (see Username::identity_keys: a look-alike of a
--                        member's name holds one of them). Members added before this hash
--                        existed have no entries; their username key in `members` still counts.
-- This order and count are keys.rs's (RoomKeys, ROOM_KEY_COUNT, FIRST_OWN_KEY).
-- A script's own keys, if any, follow from KEYS[first_own_key] on.
-- ARGV[1] is always the pub/sub channel of the room, ARGV[2] the history limit.
local meta, members, tokens, leases, log, online, names = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local room_key_count = 7
local first_own_key = room_key_count + 1
local channel, history_limit = ARGV[1], ARGV[2]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A `members` record, '<64 hex token hash>:<display name>'. replies.rs's
-- member_record_display is the one Rust reader of it.
local function member_record(token_hash, display)
  return token_hash .. ':' .. display
end

local function record_token_hash(record)
  return string.sub(record, 1, 64)
end

local function record_display(record)
  return string.sub(record, 66)
end

-- The events this script appended, in log order, and the last one's id: `append` adds to
-- them, and the epilogue (epilogue.lua, after every script) records the room's last id and
-- publishes them once the script is done, so a run of posts costs one HGET, one HSET and
-- one message on the room's channel however many chat messages it holds.
local appended, appended_last = {}, nil

-- Appends one event to the log with the id of the event before it, so readers of the log and
-- subscribers can tell a gap from a quiet room. Returns the id.
local function append(kind, username, message, reason)
  local prev = appended_last or redis.call('HGET', meta, 'last') or '0-0'
  local fields = {'t', kind, 'u', username, 'p', prev}
  if message then fields[#fields + 1] = 'm'; fields[#fields + 1] = message end
  if reason then fields[#fields + 1] = 'r'; fields[#fields + 1] = reason end
  local id = redis.call('XADD', log, 'MAXLEN', history_limit, '*', unpack(fields))
  appended_last = id
  appended[#appended + 1] = {id = id, p = prev, t = kind, u = username, m = message, r = reason}
  return id
end

-- Publishes on the room's channel: the one publish call of every script, which mod.rs makes
-- the sharded one on a cluster.
local function publish(payload)
  redis.call('PUBLISH', channel, payload)
end

-- Records the room's last event and publishes what the script appended: one event as a JSON
-- object, several as an array of them in log order (feed.rs's parse_message reads both).
local function publish_appended()
  if appended_last == nil then return end
  redis.call('HSET', meta, 'last', appended_last)
  local payload
  if #appended == 1 then payload = cjson.encode(appended[1]) else payload = cjson.encode(appended) end
  publish(payload)
end

-- The member a token names (its username key and display name), or nil.
local function member_of(token_hash)
  local key = redis.call('HGET', tokens, token_hash)
  if not key then return nil end
  local record = redis.call('HGET', members, key)
  if not record then return nil end
  return key, record_display(record)
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

-- Whether a banned name holds one of these identity keys.
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

-- Removes a member; when the room becomes empty, its keys start their ROOM_TTL countdown.
local function remove_member(key, room_ttl_secs)
  local record = redis.call('HGET', members, key)
  if not record then return nil end
  redis.call('HDEL', members, key)
  redis.call('HDEL', tokens, record_token_hash(record))
  redis.call('ZREM', leases, key)
  redis.call('ZREMRANGEBYLEX', online, '[' .. key .. '\31', '[' .. key .. '\31\255')
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

local function refresh_lease(key, lease_ttl_ms)
  redis.call('ZADD', leases, 'XX', now_ms() + tonumber(lease_ttl_ms), key)
end
