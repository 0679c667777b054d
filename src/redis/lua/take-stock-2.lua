--[[
  Takes one unit of stock for each ticket, once: a retried job finds its unit already taken.
  The stock may be split into shards (fields s0..s<K-1>) so that a hot item's units can be
  spread; the search starts at shard seq % K and tries every shard, so "sold out" is only
  answered when all shards are empty.
  KEYS[1] stock (hash s<i> -> units left)  KEYS[2] taken (hash seq -> shard)
  ARGV[1] now (ms, the caller's clock; unused)
  ARGV[2..] seqs
  Returns { units left in all shards afterwards, taken_1 (1|0), taken_2, … }
]]
local rcall = redis.call
local k = rcall('HLEN', K.stock)
local out = { 0 }
for a = 2, #ARGV do
  local taken = 0
  if rcall('HEXISTS', K.taken, ARGV[a]) == 1 then
    taken = 1
  elseif k > 0 then
    local seq = tonumber(ARGV[a])
    for i = 0, k - 1 do
      local shard = 's' .. string.format('%d', (seq + i) % k)
      if tonumber(rcall('HGET', K.stock, shard) or '0') > 0 then
        rcall('HINCRBY', K.stock, shard, -1)
        rcall('HSET', K.taken, ARGV[a], shard)
        taken = 1
        break
      end
    end
  end
  out[a] = taken
end
local sum = 0
for _, v in ipairs(rcall('HVALS', K.stock)) do sum = sum + math.max(0, tonumber(v)) end
out[1] = sum
return out
