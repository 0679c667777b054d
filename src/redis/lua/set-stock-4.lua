--[[
  Sets the units left, spread evenly over `shards` shards (reconcile: units = total - sold in
  Postgres). An item that has units again is no longer sold out (tickets that were already
  rejected stay so).
  KEYS[1] stock  KEYS[2] meta  KEYS[3] ctr  KEYS[4] taken
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] units left  ARGV[3] shards
  ARGV[4] idleOnly: '1' to set only while no ticket of the item is admitted. Then no sale is in
    flight and no ticket holds a unit (waiting tickets never do: returning a ticket to the line
    gives its unit back), so Postgres's total − sold is exactly what the counter must hold, in
    both directions.
  Returns the units set, or -1 when a sale was in flight (nothing changed).
]]
local units, k = tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[4] == '1' then
  if tonumber(redis.call('HGET', K.ctr, 'admitted') or '0') > 0 then return -1 end
  redis.call('DEL', K.taken)
end
redis.call('DEL', K.stock)
for i = 0, k - 1 do
  local share = math.floor(units / k)
  if i < units % k then share = share + 1 end
  redis.call('HSET', K.stock, 's' .. string.format('%d', i), share)
end
if units > 0 then redis.call('HDEL', K.meta, 'soldOut') end
return units
