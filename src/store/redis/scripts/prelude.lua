-- Shared by every room script (concatenated in front of each one by redis/mod.rs).
--
-- KEYS of every room script, all under the room's hash tag so one script touches one slot:
--   1 room:{id}:meta     hash: created, secret (PHC hash, absent when open), last (last event id),
--                        owner (the creator's username key, absent once it was removed),
--                        ban:<identity key> -> '1' for each identity key of a banned name,
--                        rev:<chat message id> -> what became of the message (revisions.lua)
--                        and revs (how many rev: fields there are at most) (in meta, which
--                        lives exactly as long as the room: a key of their own would be
--                        missing in most rooms, and a script naming a missing key is refused
--                        while its slot migrates)
--   2 room:{id}:members  hash: username key -> <64 hex token hash>:<display name>
--   3 room:{id}:tokens   hash: token hash -> username key
--   4 room:{id}:leases   zset: username key -> lease deadline (ms, Redis clock)
--   5 room:{id}:log      stream: the room's events
--   6 room:{id}:online   zset: <username key>\31<instance> -> presence deadline (ms)
--   7 room:{id}:names    hash: identity key -> the holder's identity keys, \31-separated, its
--                        username key first (see Username::identity_keys: a look-alike of a
--                        member's name holds one of them). Members added before this hash
--                        existed have no entries; their username key in `members` still counts.
--   8 room:{id}:holders  hash: username key -> the instances holding an online mark of it,
--                        ','-separated (ephemeral.lua): a member is online anywhere exactly while
--                        it has an entry, which is how a script tells a member's first mark and
--                        its last from the others without reading the `online` zset by prefix.
-- This order and count are keys.rs's (RoomKeys, ROOM_KEY_COUNT, FIRST_OWN_KEY).
-- A script's own keys, if any, follow from KEYS[first_own_key] on.
-- ARGV[1] is always the pub/sub channel of the room, ARGV[2] the history limit.
local meta, members, tokens, leases, log, online, names, holders = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local room_key_count = 8
local first_own_key = room_key_count + 1
local channel, history_limit = ARGV[1], ARGV[2]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The display name in a `members` record (membership.lua's member_record).
local function record_display(record)
  return string.sub(record, 66)
end

-- The events this script appended, in log order, and the last one's id: `append` adds to
-- them, and the epilogue (epilogue.lua, after every script) records the room's last id and
-- publishes them once the script is done, so a run of posts costs one HGET, one HSET and
-- one message on the room's channel however many chat messages it holds.
local appended, appended_last = {}, nil

-- The ephemeral events this script decided on (presence, typing: ephemeral.lua's `tell`), in
-- order; nil while there are none. The epilogue publishes them after the appended events, in
-- one message marked `ephemeral:` (feed.rs's parse_message), and no log keeps them.
local told = nil

-- Appends one event to the log with the id of the event before it, so readers of the log and
-- subscribers can tell a gap from a quiet room. Returns the id. Fields: t the event's name,
-- u the member, p the event before, m the message, r a removal's reason, i the chat message
-- an edit or a deletion changes (replies.rs's event_kind reads them back).
--
-- The trim is approximate (`MAXLEN ~`): Redis drops only whole stream nodes (up to
-- stream-node-max-entries events, 100 by default), which costs next to nothing, where an
-- exact trim deletes inside a node entry by entry on every append, most of Redis's CPU per
-- message. The log so holds the last history_limit events and up to a node's worth more;
-- every reader keeps to the last history_limit (`oldest_kept`), so no one sees the rest.
local function append(kind, username, message, reason, target)
  local prev = appended_last or redis.call('HGET', meta, 'last') or '0-0'
  local fields = {'t', kind, 'u', username, 'p', prev}
  if message then fields[#fields + 1] = 'm'; fields[#fields + 1] = message end
  if reason then fields[#fields + 1] = 'r'; fields[#fields + 1] = reason end
  if target then fields[#fields + 1] = 'i'; fields[#fields + 1] = target end
  local id = redis.call('XADD', log, 'MAXLEN', '~', history_limit, '*', unpack(fields))
  appended_last = id
  appended[#appended + 1] = {id = id, p = prev, t = kind, u = username, m = message, r = reason, i = target}
  return id
end

-- Publishes on the room's channel: the one publish call of every script, which mod.rs makes
-- the sharded one on a cluster.
local function publish(payload)
  redis.call('PUBLISH', channel, payload)
end

-- The id of the oldest event the room keeps (the history_limit-th newest), or nil when the
-- log holds no more than that. The excess (what `MAXLEN ~` has not trimmed yet) is at most
-- about a stream node, so this reads that many entries, never the whole log.
local function oldest_kept()
  local excess = redis.call('XLEN', log) - tonumber(history_limit)
  if excess <= 0 then return nil end
  local head = redis.call('XRANGE', log, '-', '+', 'COUNT', excess + 1)
  return head[#head][1]
end

-- Whether stream id `a` comes before `b`. Both are '<ms>-<seq>' in decimal without leading
-- zeros (Redis's and EventId's Display), compared digit-exactly: u64 parts do not fit a Lua
-- number.
local function id_before(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  local function less(x, y)
    if #x ~= #y then return #x < #y end
    return x < y
  end
  if a_ms ~= b_ms then return less(a_ms, b_ms) end
  return less(a_seq, b_seq)
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

-- `now`: Redis's clock in ms if the caller has it (`id_ms`), else TIME is asked.
local function refresh_lease(key, lease_ttl_ms, now)
  redis.call('ZADD', leases, 'XX', (now or now_ms()) + tonumber(lease_ttl_ms), key)
end

-- The time in an id from `XADD *`: Redis's clock in ms when it was made (or the log's newest
-- time, if the clock went back since), which spares a TIME call right after an append.
local function id_ms(id)
  return tonumber(string.match(id, '^(%d+)-'))
end
