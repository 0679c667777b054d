--[[
  Gives a join to a split item its join number (queue/split-line.ts), on the item's own slot,
  unless the user is blocked (for the item or everywhere: K.blocked, as join-5.lua checks it).
  KEYS[1] ctr  KEYS[2] blocked
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] userId
  Returns the number (ctr jn after HINCRBY), or -1 for a blocked user.
]]
if redis.call('HEXISTS', K.blocked, ARGV[2]) == 1 then return -1 end
return redis.call('HINCRBY', K.ctr, 'jn', 1)
