--[[
  Writes what the controller of an item's gate publishes, only while the writer holds the lease
  that makes it the controller (lead-1.lua): a leader that stalled past its lease (a GC pause, a
  slow Redis) published its stale limit and pace once over the new leader's.
  KEYS[1] leader  KEYS[2] gate
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] me: the writer's id
  ARGV[3..] field, value pairs of the gate hash
  Returns 1 written, 0 another daemon (or none) holds the lease: nothing written.
]]
if redis.call('GET', K.leader) ~= ARGV[2] then return 0 end
redis.call('HSET', K.gate, unpack(ARGV, 3))
return 1
