--[[
  Records an item's point for one second, once: every daemon offers its point for the second and
  the first one wins, so the series is the same whoever reads it. Keeps `keep` seconds.
  KEYS[1] series (zset: score = unix second, member = "<second>|<json>")
  ARGV[1] second  ARGV[2] point JSON  ARGV[3] seconds to keep
  Returns 1 if recorded, 0 if the second had its point already.
]]
local sec, keep = tonumber(ARGV[1]), tonumber(ARGV[3])
local added = 0
if redis.call('ZCOUNT', KEYS[1], sec, sec) == 0 then
  redis.call('ZADD', KEYS[1], sec, ARGV[1] .. '|' .. ARGV[2])
  added = 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (sec - keep))
redis.call('EXPIRE', KEYS[1], keep * 2)
return added
