--[[
  Gives back the unit a ticket took, once (when Postgres refused the sale).
  KEYS[1] stock  KEYS[2] taken
  ARGV[1] seq
  Returns 1 refunded, 0 nothing was taken.
]]
local shard = redis.call('HGET', KEYS[2], ARGV[1])
if not shard then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], shard, 1)
return 1
