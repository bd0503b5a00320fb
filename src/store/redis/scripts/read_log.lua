-- ARGV: 3 after (an event id), 4 how many events at most.
-- Reply: {'ok', the events after `after` that the room keeps, in log order, the newest event
-- as a one-entry list (empty when the log is)}: the newest alone tells a quiet room from a
-- log that lost `after` when nothing follows it (store/mod.rs's LogRead::after).
local start = '(' .. ARGV[3]
-- The log may hold events before the last history_limit (see `append`): a reader whose id
-- is older than the oldest kept starts from it, as if they were gone, and is told a gap.
local oldest = oldest_kept()
if oldest and id_before(ARGV[3], oldest) then start = oldest end
local events = redis.call('XRANGE', log, start, '+', 'COUNT', ARGV[4])
return {'ok', events, redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)}
