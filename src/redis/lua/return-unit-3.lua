--[[
  Gives back the units of released reservations, once per order: to the stock counter (so the
  next waiting tickets are admitted) and to their buyers (a user's entry in `users` is cleared when
  it still names the order's succeeded ticket, so the user may join again; the old ticket stays succeeded;
  one that still runs is marked, and does not hold its user once it succeeds).
  Postgres releases an order exactly once; the `returned` set makes a repeat of this call (a retry,
  or two daemons finishing the same release) harmless.
  The counter never goes past `cap`, the units Postgres has left after the releases (read after
  they committed; '' for none): a release whose unit Postgres dropped (the stock lowered under what
  was sold or reserved: total follows max(target, sold), drizzle/0013) gives none back here either
  — it did, and the item read open with a unit to sell, admitted a ticket and told it sold_out.
  KEYS[1] stock  KEYS[2] returned (set of order ids)  KEYS[3] users
  ARGV[1] now (ms, the caller's clock; unused)  ARGV[2] cap
  ARGV[3..] pairs: orderId, userId
  Returns how many orders were given back now (the others had been already).
]]
-- @include _lib
local k = rcall('HLEN', K.stock)
local cap = tonumber(ARGV[2])
local units = cap and unitsOnCounter() or 0
local n = 0
for i = 3, #ARGV, 2 do
  local orderId, userId = ARGV[i], ARGV[i + 1]
  if rcall('SADD', K.returned, orderId) == 1 then
    -- No counter, no unit to give back to it: an item whose handler keeps no stock (changed
    -- since), or one Redis lost (its restore counts the unit from Postgres). Writing one made a
    -- stock counter on an external item, which then admitted as many tickets as it held.
    if k > 0 and (not cap or units < cap) then
      rcall('HINCRBY', K.stock, 's' .. fmt(tonumber(orderId) % k), 1)
      units = units + 1
    end
    local seq = tonumber(rcall('HGET', K.users, userId) or '')
    if seq then
      local record = getRecord(seq)
      if record and string.sub(record, 1, 1) == 's' then
        -- Only the ticket of this order (or one whose outcome is no longer held): after a Redis
        -- rollback lost the user's entry, a later ticket of theirs may have succeeded with an order
        -- of its own, and freed, its user's next join made a ticket Postgres then refused.
        local ok, o = pcall(cjson.decode, rcall('HGET', keyOf.x(seq), 'outcome') or 'null')
        local other = ok and type(o) == 'table' and type(o.result) == 'table' and o.result.orderId ~= nil and tostring(o.result.orderId) ~= orderId
        if not other then rcall('HDEL', K.users, userId) end
      elseif record then
        -- Still running (its sale committed, its settle not yet in): marked, so that if it ends
        -- succeeded with this order it ends rejected / reservation_released instead (finish in
        -- _lib), and its user may join again.
        rcall('HSET', keyOf.x(seq), 'orderReleased', orderId)
      end
    end
    n = n + 1
  end
end
return n
