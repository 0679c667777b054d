--[[
  Takes one unit of stock for each ticket, once (takeUnit in _lib.lua): a ticket admitted by
  admit-12.lua already holds its unit, and a retried job finds its unit already taken. The stock
  may be split into shards (fields s0..s<K-1>) so that a hot item's units can be spread; "sold
  out" is only answered when all shards are empty.
  KEYS[1] stock (hash s<i> -> units left)  KEYS[2] taken (hash seq -> shard)
  ARGV[1] now (ms, the caller's clock; unused)
  ARGV[2..] seqs
  Returns { units left in all shards afterwards, taken_1 (1|0), taken_2, … }
]]
-- @include _lib
local out = { 0 }
for a = 2, #ARGV do
  out[a] = takeUnit(tonumber(ARGV[a])) and 1 or 0
end
local sum = 0
for _, v in ipairs(rcall('HVALS', K.stock)) do sum = sum + math.max(0, tonumber(v)) end
out[1] = sum
return out
