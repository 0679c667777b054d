--[[
  Records an item's point for one second, once: every daemon offers its point for the second and
  the first one wins, so the series is the same whoever reads it. Keeps `keep` seconds.
  KEYS[1] series (zset: score = unix second, member = "<second>|<json>")
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] second  ARGV[3] point JSON  ARGV[4] keep: seconds to keep
  Returns 1 if recorded, 0 if the second had its point already.
]]
local sec, keep = tonumber(ARGV[2]), tonumber(ARGV[4])
local added = 0
if redis.call('ZCOUNT', K.series, sec, sec) == 0 then
  redis.call('ZADD', K.series, sec, ARGV[2] .. '|' .. ARGV[3])
  added = 1
end
redis.call('ZREMRANGEBYSCORE', K.series, '-inf', '(' .. (sec - keep))
redis.call('EXPIRE', K.series, keep * 2)
return added
