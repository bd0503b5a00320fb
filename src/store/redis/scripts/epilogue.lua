end
-- Closes the function that wraps every script's own text (mod.rs's room_script!), so that
-- what it appended, then what it told, is published after it returns, whichever `return`
-- it took.
local reply = script_body()
publish_appended()
if told then publish('ephemeral:' .. cjson.encode(told)) end
return reply
