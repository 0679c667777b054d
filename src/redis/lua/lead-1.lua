--[[
  Takes or renews the lease that makes one daemon the controller of an item's gate.
  KEYS[1] leader key
  ARGV[1] this daemon's id  ARGV[2] lease ttl (ms)
  Returns 1 when this daemon holds the lease (newly or still), 0 when another does.
]]
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
