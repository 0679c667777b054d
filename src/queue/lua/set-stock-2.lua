--[[
  Sets the units left, spread evenly over K shards (reconcile: units = total - sold in Postgres).
  An item that has units again is no longer sold out (tickets that were already rejected stay so).
  KEYS[1] stock  KEYS[2] meta
  ARGV[1] units left  ARGV[2] shards K
  Returns the units set.
]]
local units, k = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('DEL', KEYS[1])
for i = 0, k - 1 do
  local share = math.floor(units / k)
  if i < units % k then share = share + 1 end
  redis.call('HSET', KEYS[1], 's' .. string.format('%d', i), share)
end
if units > 0 then redis.call('HDEL', KEYS[2], 'soldOut') end
return units
