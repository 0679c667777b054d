--[[
  Extends the leases of admitted tickets that were handed to a job queue, so the sweeper does not
  re-offer them while their job waits or runs; the running job renews them. A ticket whose job
  vanished (a crash, a Redis rollback) comes back to the head when its lease runs out.
  KEYS[1] leases  KEYS[2] ctr  KEYS[3] doubt
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] until: the new expiry (ms)
  ARGV[3..] seq, leaseId pairs
  A ticket in doubt (holdInDoubt in _lib.lua) whose lease is renewed is being run again (a dead
  daemon's job taken over by another): it leaves doubt, and its job settles it.
  Returns, per pair, 1 if its lease was extended, 2 if so and the ticket was admitted before (an
  earlier lease of it ran out, or it waited in doubt: x.prevLease; what that run did is unknown),
  0 if it was superseded (left alone): the ticket was offered again, and whoever holds it now runs
  it, not the caller.
]]
local held = {}
for i = 3, #ARGV, 2 do
  local x = keyOf.x(ARGV[i])
  if redis.call('HGET', x, 'lease') == ARGV[i + 1] then
    redis.call('HSET', x, 'leaseExp', ARGV[2])
    redis.call('ZADD', K.leases, tonumber(ARGV[2]), ARGV[i])
    if redis.call('ZREM', K.doubt, ARGV[i]) == 1 then redis.call('HINCRBY', K.ctr, 'doubt', -1) end
    held[#held + 1] = redis.call('HEXISTS', x, 'prevLease') == 1 and 2 or 1
  else
    held[#held + 1] = 0
  end
end
return held
