--[[
  Takes one unit of stock for a ticket, once: a retried job finds its unit already taken.
  The stock may be split into shards (fields s0..s<K-1>) so that a hot item's units can be
  spread; the search starts at shard seq % K and tries every shard, so "sold out" is only
  answered when all shards are empty.
  KEYS[1] stock (hash s<i> -> units left)  KEYS[2] taken (hash seq -> shard)
  ARGV[1] seq
  Returns { taken (1|0), units left in all shards afterwards }
]]
local rcall = redis.call
local function total()
  local sum = 0
  for _, v in ipairs(rcall('HVALS', KEYS[1])) do sum = sum + math.max(0, tonumber(v)) end
  return sum
end
if rcall('HEXISTS', KEYS[2], ARGV[1]) == 1 then return { 1, total() } end
local k = rcall('HLEN', KEYS[1])
if k == 0 then return { 0, 0 } end
local seq = tonumber(ARGV[1])
for i = 0, k - 1 do
  local shard = 's' .. string.format('%d', (seq + i) % k)
  local left = tonumber(rcall('HGET', KEYS[1], shard) or '0')
  if left > 0 then
    rcall('HINCRBY', KEYS[1], shard, -1)
    rcall('HSET', KEYS[2], ARGV[1], shard)
    return { 1, total() }
  end
end
return { 0, 0 }
