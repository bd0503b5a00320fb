-- Ephemeral events and online marks, for the scripts that publish presence or typing (hold,
-- release, typing): mod.rs's room_script! puts this after prelude.lua in those only.

-- Tells the room something of the moment: kind 'presence' (with `online`) or 'typing', about
-- the member whose display name this is. Published by the epilogue, never appended.
local function tell(kind, display, online)
  told = told or {}
  told[#told + 1] = {k = kind, u = display, o = online}
end

-- Tells the room that member `key` came online or went offline (nothing if it is no longer a
-- member: its removal told the room).
local function tell_presence(key, online)
  local record = redis.call('HGET', members, key)
  if record then tell('presence', record_display(record), online) end
end

-- Adds `instance` to the holders of `key`; true when it is the first (the member comes online).
local function add_holder(key, instance)
  local held = redis.call('HGET', holders, key)
  if not held then
    redis.call('HSET', holders, key, instance)
    return true
  end
  if not string.find(',' .. held .. ',', ',' .. instance .. ',', 1, true) then
    redis.call('HSET', holders, key, held .. ',' .. instance)
  end
  return false
end

-- Removes `instance` from the holders of `key`; true when it was the last (the member goes
-- offline). An instance that is not among them (a mark of an earlier version) changes nothing.
local function remove_holder(key, instance)
  local held = redis.call('HGET', holders, key)
  if not held then return false end
  local rest, found = {}, false
  for holder in string.gmatch(held, '[^,]+') do
    if holder == instance then found = true else rest[#rest + 1] = holder end
  end
  if not found then return false end
  if #rest == 0 then
    redis.call('HDEL', holders, key)
    return true
  end
  redis.call('HSET', holders, key, table.concat(rest, ','))
  return false
end

-- Clears the marks that lapsed by `now` (their instance stopped refreshing them: it died).
-- Returns the members left with no mark, in order, and the same as a set.
local function clear_lapsed(now)
  local gone, gone_set = {}, {}
  local lapsed = redis.call('ZRANGEBYSCORE', online, '-inf', now)
  if #lapsed == 0 then return gone, gone_set end
  redis.call('ZREMRANGEBYSCORE', online, '-inf', now)
  for _, mark in ipairs(lapsed) do
    local key, instance = string.match(mark, '^(.*)\31(.*)$')
    if key and remove_holder(key, instance) then
      gone[#gone + 1] = key
      gone_set[key] = true
    end
  end
  return gone, gone_set
end
