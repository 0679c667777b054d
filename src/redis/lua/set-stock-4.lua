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
  ARGV[5] admissions  ARGV[6] unitsWere: with idleOnly, the item's admissions counter and the
    units the counter held (its shards summed, negatives as 0) before the caller counted in
    Postgres ('' to skip): units are set only if neither has moved since, for then the count it
    brings is still the truth. (Without them, a whole sale could happen between the caller's count
    and this script — admitted, sold, settled — and the counter would be set back to the units
    before it; or released units come back, and be taken away again.)
  Not idleOnly (an operator's change of the stock mid-sale, a restore): the units that admitted
  tickets hold are not on the counter — each will sell (Postgres's sold grows) or come back (its
  refund adds it) — so they are taken off the units given, and K.taken stays. (Set to total − sold
  alone, the counter held them twice: after Postgres's last unit as many more tickets were
  admitted, to be refused by Postgres, and `remaining` read that much too high; a review saw 7.)
  Counted as the fewer of the tickets admitted and the unit markers (K.taken; an ended ticket keeps
  its marker until the outcome ledger drops it): O(1), where reading each marker's ticket took
  34 ms at 10,000 markers. It errs low, never high: a ticket whose sale committed and is not settled
  yet, or one admitted without a unit, is taken off too (units missing until the stock keeper's
  idle round sets the counter from Postgres; never one made up).
  Returns the units set, or -1 when a sale was in flight or the counter moved since (nothing changed).
]]
local units, k = tonumber(ARGV[2]), tonumber(ARGV[3])
if ARGV[4] == '1' then
  local ctr = redis.call('HMGET', K.ctr, 'admitted', 'admissions')
  if tonumber(ctr[1] or '0') > 0 then return -1 end
  if ARGV[5] ~= '' and (ctr[2] or '0') ~= ARGV[5] then return -1 end
  if ARGV[6] ~= '' then
    local had = 0
    for _, v in ipairs(redis.call('HVALS', K.stock)) do had = had + math.max(0, tonumber(v)) end
    if had ~= tonumber(ARGV[6]) then return -1 end
  end
  redis.call('DEL', K.taken)
else
  local admitted = tonumber(redis.call('HGET', K.ctr, 'admitted') or '0')
  units = math.max(0, units - math.min(admitted, redis.call('HLEN', K.taken)))
end
redis.call('DEL', K.stock)
for i = 0, k - 1 do
  local share = math.floor(units / k)
  if i < units % k then share = share + 1 end
  redis.call('HSET', K.stock, 's' .. string.format('%d', i), share)
end
-- Restocked: no longer sold out, and no longer ended (unless closed), so retention counts its
-- 24 h from the next end, not from the first (a ticket that ended 31 min after a second sell-out
-- was removed with the item's keys, 24 h after the first).
if units > 0 and redis.call('HDEL', K.meta, 'soldOut') == 1 and not redis.call('HGET', K.meta, 'closed') then redis.call('HDEL', K.meta, 'endedAt') end
-- Units Postgres holds now: a sell-out decided on a read from before is refused (cut-8.lua decidedAt).
-- An operator's change (not idleOnly) marks it even when it sets 0: its units were all taken off
-- for admitted tickets, some of which had sold already (Postgres counted them; Redis had not
-- settled them). Unmarked, a sale's sell-out read before the restock ended every waiting user
-- `sold_out` with the new units on sale (restock-in-flight.test.ts, 1 run in 3); refused, they
-- wait, and the stock keeper sets the counter from Postgres once the sale in flight has settled.
if units > 0 or ARGV[4] ~= '1' then redis.call('HSET', K.meta, 'stockSetAt', ARGV[1]) end
-- An operator's change (not idleOnly) has reached Redis: the sell-outs it held back may be cut again.
if ARGV[4] ~= '1' then redis.call('HDEL', K.meta, 'stockPending') end
return units
