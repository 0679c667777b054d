--[[
  Lets a user join again whose ticket ended with an order Postgres has since released, where
  Redis still names that ticket as theirs: the release's own Redis step (return-unit-3.lua, which
  clears the entry) was lost, e.g. to a Redis rollback, and its order is marked returned in
  Postgres, so no sweep runs it again. Only the entry: the unit comes back with the stock keeper's
  count from Postgres.
  KEYS[1] users (hash userId -> seq of the user's latest ticket)
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] userId  ARGV[3] seq: the ticket it must still name
  Returns 1 if the entry was cleared, 0 if it names another ticket (or none).
]]
if redis.call('HGET', K.users, ARGV[2]) ~= ARGV[3] then return 0 end
redis.call('HDEL', K.users, ARGV[2])
return 1
