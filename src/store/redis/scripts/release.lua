-- This instance no longer holds these members: each goes offline unless another instance
-- holds it. ARGV: 3 instance id, 4... username keys. Reply: {'ok', presence events told}
for i = 4, #ARGV do
  local key = ARGV[i]
  redis.call('ZREM', online, key .. '\31' .. ARGV[3])
  if remove_holder(key, ARGV[3]) then tell_presence(key, false) end
end
return {'ok', told and #told or 0}
