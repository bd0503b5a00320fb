end
-- Closes the function that wraps every script's own text (mod.rs's room_script!), so that
-- what it appended is published after it returns, whichever `return` it took.
local reply = script_body()
publish_appended()
return reply
