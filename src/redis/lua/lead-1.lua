--[[
  Takes or renews the lease that makes one daemon the controller of an item's gate.
  KEYS[1] leader
  ARGV[1] now (ms, the caller's clock; unused: the lease runs on Redis's clock)
  ARGV[2] me: this daemon's id  ARGV[3] ttlMs: the lease's length
  Returns 1 when this daemon holds the lease (newly or still), 0 when another does.
]]
local holder = redis.call('GET', K.leader)
if holder == ARGV[2] or not holder then
  redis.call('SET', K.leader, ARGV[2], 'PX', tonumber(ARGV[3]))
  return 1
end
return 0
