--[[
  Moves units between the stock shares of a split item's sub-lines, one side at a time (the
  admitting daemon, under the item's round lease: queue/split-line.ts). Taking comes first and
  only what is there, so a move cut short loses units from the counter (reconcile sets them
  again from Postgres), never makes one up.
  KEYS[1] stock
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] delta: < 0 takes up to -delta units,
    > 0 adds delta units (to field s0)
  Returns the units taken or added.
]]
local delta = tonumber(ARGV[2])
if delta > 0 then
  redis.call('HINCRBY', K.stock, 's0', delta)
  return delta
end
local want, got = -delta, 0
local flat = redis.call('HGETALL', K.stock)
for j = 1, #flat, 2 do
  local take = math.min(want - got, math.max(0, tonumber(flat[j + 1])))
  if take > 0 then
    redis.call('HINCRBY', K.stock, flat[j], -take)
    got = got + take
  end
end
return got
