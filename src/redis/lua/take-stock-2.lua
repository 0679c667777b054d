--[[
  Takes one unit of stock for each ticket, once (takeUnit in _lib.lua): a ticket admitted by
  admit-12.lua already holds its unit, and a retried job finds its unit already taken. The stock
  may be split into shards (fields s0..s<K-1>) so that a hot item's units can be spread; "sold
  out" is only answered when all shards are empty. A ticket whose record says it is no longer
  admitted (it ended, or went back to the line) takes nothing: a job of it that stalled and ran
  on after another run ended it (and the outcome ledger cleared its unit marker) would take a
  unit nobody gives back. (A seq with no record takes as before.)
  KEYS[1] stock (hash s<i> -> units left)  KEYS[2] taken (hash seq -> shard)
  ARGV[1] now (ms, the caller's clock; unused)
  ARGV[2..] seqs
  Returns { units left in all shards afterwards, taken_1 (1 taken | 0 none left | -1 not admitted), taken_2, … }
]]
-- @include _lib
local out = { 0 }
for a = 2, #ARGV do
  local seq = tonumber(ARGV[a])
  local record = getRecord(seq)
  if record and string.sub(record, 1, 1) ~= 'a' then out[a] = -1
  else out[a] = takeUnit(seq) and 1 or 0 end
end
out[1] = unitsOnCounter()
return out
