-- A member edits its chat message. ARGV: 3 token hash, 4 lease ttl ms, 5 the message's id,
-- 6 the new text.
-- Reply: {'unauthorized'} | {'not_found'} | {'forbidden'} | {'ok', author, text, last edit
-- id or '', 1 when this edit was appended else 0}: the message as it stands. An edit to the
-- text it has already appends nothing.
local key, display = member_of(ARGV[3])
if not key then return {'unauthorized'} end
refresh_lease(key, ARGV[4])
local author, text, edit_id = revisable(ARGV[5])
if not author then return {'not_found'} end
if author ~= display then return {'forbidden'} end
local appended_now = 0
if text ~= ARGV[6] then
  appended_now = 1
  text = ARGV[6]
  edit_id = append('update:chat:success', author, text, nil, ARGV[5])
  revise(ARGV[5], edit_id .. ' ' .. text)
end
return {'ok', author, text, edit_id or '', appended_now}
