-- Shared helpers, spliced into scripts by `-- @include _lib`. They work on the item's keys in `K`
-- (the script's KEYS by name, see ../scripts.ts) and build a ticket's own keys with `keyOf`
-- (written from ../keys.ts). Ticket records live in pages of PAGE_SIZE (hash keyOf.page(seq),
-- field = seq) so each page stays a compact listpack; a record is
-- "<state char><createdAt - epoch, ms>|<userId>".
-- State chars: w waiting, a admitted, s succeeded, r rejected, f failed, c cancelled, e expired.
local rcall = redis.call
local fmt = function(n) return string.format('%d', n) end

local function getRecord(seq)
  return rcall('HGET', keyOf.page(seq), fmt(seq))
end

local function setState(seq, record, stateChar)
  local rec = stateChar .. string.sub(record, 2)
  rcall('HSET', keyOf.page(seq), fmt(seq), rec)
  return rec
end

local function recordUser(record)
  local bar = string.find(record, '|', 1, true)
  return string.sub(record, bar + 1)
end

-- When the ticket joined (ms), from its record and the item's epoch. (Records written before joins
-- were held to the epoch may carry a negative offset.)
local function recordCreated(record, epoch)
  return epoch + tonumber(string.match(record, '^%a(-?%d+)|'))
end

-- The cuts: when an item closes or sells out, every ticket still waiting at that moment ends at
-- once. Instead of touching each ticket, a cut {seq, state, reason} is appended to meta.cuts; a
-- record still marked 'w' whose seq is <= a cut's seq has ended with the first such cut.
local function loadCuts()
  local raw = rcall('HGET', K.meta, 'cuts')
  if not raw or raw == '' then return {} end
  return cjson.decode(raw)
end

local function cutFor(cuts, seq)
  for _, c in ipairs(cuts) do
    if seq <= c[1] then return c end
  end
  return nil
end

local function lastCutSeq(cuts)
  if #cuts == 0 then return 0 end
  return cuts[#cuts][1]
end

-- The ticket a join returns instead of making another: the user's latest one in this line, if it
-- is waiting (and not cut), admitted, or succeeded where `rejoin` forbids another success:
-- 'unless_succeeded' after one, 'unless_succeeded:N' after N (a coupon's perUser). The wins
-- hash (on the users hash's slot) counts a user's successes before their latest ticket: a join
-- after a success adds that one as it makes the next ticket (`won`), so the count costs a write
-- only when a winner joins again. Returns its seq and record; or nil, nil, won: whether the latest
-- ticket succeeded (the caller counts it when it makes a ticket). Needs K.users, K.meta.
local function heldTicket(userId, rejoin)
  local prev = tonumber(rcall('HGET', K.users, userId) or '')
  local record = prev and getRecord(prev)
  if not record then return nil end
  local st = string.sub(record, 1, 1)
  if st == 'w' and cutFor(loadCuts(), prev) then return nil end
  if st == 'w' or st == 'a' then return prev, record end
  if st ~= 's' then return nil end
  local most = rejoin == 'unless_succeeded' and 1 or tonumber(string.match(rejoin or '', '^unless_succeeded:(%d+)$'))
  if not most then return nil end
  -- A success under the item's earlier handler (define-5.lua marks where the current one began) is
  -- no win of this one's: the user joins anew. (A split item's other sub-lines: split-line.ts defineSubLines.)
  if prev <= tonumber(rcall('HGET', K.meta, 'winsFrom') or '0') then return nil end
  if most <= 1 or tonumber(rcall('HGET', K.base .. 'wins', userId) or '0') + 1 >= most then return prev, record end
  return nil, nil, true
end

-- Counts the success of a user's latest ticket as a new ticket replaces it (heldTicket's `won`).
local function countWin(userId, won)
  if won then rcall('HINCRBY', K.base .. 'wins', userId, 1) end
end

-- Gives back the unit of stock a ticket took (seckill, coupon), if it holds one: whatever ends a
-- ticket without a sale, or returns it to the line, puts its unit back in the counter at once, so
-- a unit is never stranded on a ticket that will not buy it. Idempotent (the `taken` entry goes).
-- Needs K.taken, K.stock.
-- Puts one unit back into the stock counter, into `shard` while the counter has that shard. A
-- counter set since with fewer shards (an operator's `shards` lowered) has it no more: written
-- there, the unit sat in a field takeUnit never visits while the sums counted it (admissions went
-- on against it, each ticket back at the head for want of a unit, for as long as reservations were
-- pending); it goes to s0. No counter at all, no unit: an item whose handler keeps no stock (changed
-- since), or one Redis lost (its restore counts the unit from Postgres). Needs K.stock.
-- The units the stock counter holds, over its shards (a negative one counts as none). Needs K.stock.
local function unitsOnCounter()
  local units = 0
  for _, v in ipairs(rcall('HVALS', K.stock)) do units = units + math.max(0, tonumber(v) or 0) end
  return units
end

local function unitBack(shard)
  if rcall('HEXISTS', K.stock, shard) == 1 then
    rcall('HINCRBY', K.stock, shard, 1)
  elseif rcall('EXISTS', K.stock) == 1 then
    rcall('HINCRBY', K.stock, 's0', 1)
  end
end

local function releaseUnit(seq)
  local shard = rcall('HGET', K.taken, fmt(seq))
  if shard then
    rcall('HDEL', K.taken, fmt(seq))
    unitBack(shard)
  end
end

-- Takes one unit of stock for a ticket, once (a retried job finds its unit already taken). The
-- stock may be split into shards (fields s0..s<K-1>); the search starts at shard seq % K and tries
-- every shard, so no unit is missed while any shard has one. Returns whether the ticket holds a
-- unit. Needs K.stock, K.taken.
local function takeUnit(seq)
  if rcall('HEXISTS', K.taken, fmt(seq)) == 1 then return true end
  local k = rcall('HLEN', K.stock)
  for i = 0, k - 1 do
    local shard = 's' .. fmt((seq + i) % k)
    if tonumber(rcall('HGET', K.stock, shard) or '0') > 0 then
      rcall('HINCRBY', K.stock, shard, -1)
      rcall('HSET', K.taken, fmt(seq), shard)
      return true
    end
  end
  return false
end

-- Ends a ticket: record state, outcome and times in x:<seq>, counters moved, and the ticket
-- announced on the item's `done` stream, which feeds the outcome ledger in Postgres. The entry
-- carries everything the ledger writes (record, outcome, times), so reading it costs no further
-- round trip per ticket. Needs K.ctr, K.payloads, K.done, K.taken, K.stock.
local function finish(seq, record, fromCounter, stateChar, status, outcomeJson, now)
  local xKey = keyOf.x(seq)
  -- Its order was released while it still ran (return-unit-3.lua marked it: a reservation past its
  -- time that the sweep released as the run answered): no sale of its any more, and the unit went
  -- back with the release. It ends rejected / reservation_released, as a run after the release
  -- does; told `succeeded`, its user held an order they could not pay for (confirm: 409). Only
  -- when the mark names the order it succeeded with: the release marks the user's latest ticket,
  -- which may be a later one with an order of its own.
  local released = false
  if stateChar == 's' then
    local mark = rcall('HGET', xKey, 'orderReleased')
    if mark then
      local ok, o = pcall(cjson.decode, outcomeJson)
      released = ok and type(o) == 'table' and type(o.result) == 'table' and o.result.orderId ~= nil and tostring(o.result.orderId) == mark
    end
  end
  if released then stateChar, status, outcomeJson = 'r', 'rejected', cjson.encode({ status = 'rejected', reason = 'reservation_released' }) end
  -- Ended for its released order (so, the doubt resolver, a run after the release): its unit, if
  -- it still holds one, is that order's, which the release gave back already: dropped, not given
  -- back twice (the counter read one over).
  if stateChar == 'r' and string.find(outcomeJson, '"reservation_released"', 1, true) then
    rcall('HDEL', K.taken, fmt(seq))
  elseif stateChar ~= 's' then
    releaseUnit(seq)
  end
  -- An ended ticket's payload is never read again (its order row keeps its own copy).
  rcall('HDEL', K.payloads, fmt(seq))
  local rec = setState(seq, record, stateChar)
  local admittedAt = rcall('HGET', xKey, 'admittedAt') or ''
  local source = rcall('HGET', keyOf.sourcePage(seq), fmt(seq)) or ''
  rcall('XADD', K.done, '*', 's', fmt(seq), 'r', rec, 'o', outcomeJson, 'a', admittedAt, 'f', fmt(now), 'k', source)
  rcall('HSET', xKey, 'outcome', outcomeJson, 'updatedAt', fmt(now), 'finishedAt', fmt(now))
  rcall('HINCRBY', K.ctr, fromCounter, -1)
  rcall('HINCRBY', K.ctr, status, 1)
  return rec
end

local stateByChar = { s = 'succeeded', r = 'rejected', f = 'failed', c = 'cancelled', e = 'expired' }

-- A ticket of a cut item that was admitted and whose outcome is unknown (its lease ran out, or it
-- was back at the head when the cut came): its effect may have happened (a sale committed, a
-- webhook answered, by a daemon that died before settling), so the cut's "sold out" or "closed"
-- could be false. It stays admitted in K.doubt (seq -> since, ms) until the service learns its
-- outcome (service/doubt-resolver.ts: Postgres's rows, or its handler run again), or the holder
-- of its last lease, which it keeps, settles it. Its unit stays taken: ending it without a sale
-- gives it back. Needs K.ctr, K.doubt.
local function holdInDoubt(seq, now)
  if rcall('ZADD', K.doubt, 'NX', now, fmt(seq)) == 1 then rcall('HINCRBY', K.ctr, 'doubt', 1) end
  rcall('HSET', keyOf.x(seq), 'updatedAt', fmt(now))
end

-- Ends a ticket with an outcome (JSON) whose status names its state, its lease dropped: one whose
-- run is known to have had no effect. Needs what finish() needs.
local function finishLeased(seq, record, from, outcome, now)
  local status = cjson.decode(outcome).status
  local char = 'r'
  for c, st in pairs(stateByChar) do if st == status then char = c end end
  rcall('HDEL', keyOf.x(seq), 'lease', 'leaseExp')
  return finish(seq, record, from, char, status, outcome, now)
end

-- A waiting ticket that was admitted before (back at the head, in K.retry) and must not run again
-- now (its item was cut, or its user blocked), but whose effect may have happened: admitted again,
-- in doubt (holdInDoubt). `ifNone`: the outcome JSON it gets if its effect did not happen (nil:
-- the cut's). Needs K.ctr, K.doubt.
local function doubtInstead(seq, record, now, ifNone)
  -- Back after its holder's retry (x.noEffect): its run is known to have done nothing, and its
  -- lease may write nothing more; nothing to wait for (its lease came back to life, and a late
  -- `succeeded` under it ended a blocked user's ticket succeeded).
  if ifNone and rcall('HGET', keyOf.x(seq), 'noEffect') == '1' then return finishLeased(seq, record, 'waiting', ifNone, now) end
  setState(seq, record, 'a')
  -- The lease it last ran under (kept by returnToHead): its holder's outcome, however late, is
  -- what the doubt waits for (settle-9.lua takes it from the holder of the ticket's lease).
  local xKey = keyOf.x(seq)
  local last = rcall('HGET', xKey, 'prevLease')
  if last then rcall('HSET', xKey, 'lease', last) end
  holdInDoubt(seq, now)
  if ifNone then rcall('HSET', keyOf.x(seq), 'ifNone', ifNone) end
  rcall('HINCRBY', K.ctr, 'waiting', -1)
  rcall('HINCRBY', K.ctr, 'admitted', 1)
end

-- Takes a ticket out of doubt (it is being settled); returns whether it was in doubt.
-- Needs K.ctr, K.doubt.
local function leaveDoubt(seq)
  if rcall('ZREM', K.doubt, fmt(seq)) == 0 then return false end
  rcall('HINCRBY', K.ctr, 'doubt', -1)
  return true
end

-- Ends a ticket admitted before whose run is known to have had no effect (its lease's holder wrote
-- back a retry), on a cut item: with the outcome it was held in doubt with (x.ifNone: rejected
-- blocked), else the cut's (rejected sold_out, cancelled item_closed) — what resolve-doubt-7.lua
-- would end it with after the grace, with nothing left to wait for. `from`: the counter it leaves
-- ('admitted' or 'waiting'). Needs what finish() needs.
local function endWithoutEffect(seq, record, from, cut, now)
  local outcome = rcall('HGET', keyOf.x(seq), 'ifNone') or cjson.encode({ status = stateByChar[cut[2]], reason = cut[3] })
  return finishLeased(seq, record, from, outcome, now)
end

-- Puts an admitted ticket back at the head of the line (expired lease or retry). If the item was
-- cut (closed / sold out) after the ticket joined, it waits in doubt instead (holdInDoubt), unless
-- `noEffect`: then it ends at once (endWithoutEffect).
-- `noEffect`: the holder of the ticket's lease said its run had no effect and none will follow
-- under that lease (an outside worker's `retry`, settle-9.lua); kept as x.noEffect while the
-- ticket waits at the head, where it lets the user cancel it (cancel-9.lua). Any other return
-- (a lease run out) clears it: that run's effect is unknown.
-- Needs what finish() needs, and K.meta, K.retry, K.doubt.
local function returnToHead(seq, record, now, noEffect)
  local cut = cutFor(loadCuts(), seq)
  if cut then
    if noEffect then return endWithoutEffect(seq, record, 'admitted', cut, now) end
    -- It was admitted: its effect may have happened (a sale committed before its daemon died, the
    -- settle lost), so the cut's outcome could be false. It waits in doubt instead.
    holdInDoubt(seq, now)
    return record
  end
  releaseUnit(seq)
  local rec = setState(seq, record, 'w')
  local xKey = keyOf.x(seq)
  local lease = rcall('HGET', xKey, 'lease')
  if lease then rcall('HSET', xKey, 'prevLease', lease) end
  rcall('HDEL', xKey, 'lease', 'leaseExp')
  if noEffect then rcall('HSET', xKey, 'noEffect', '1') else rcall('HDEL', xKey, 'noEffect') end
  rcall('HSET', xKey, 'updatedAt', fmt(now))
  rcall('ZADD', K.retry, seq, fmt(seq))
  rcall('HINCRBY', K.ctr, 'admitted', -1)
  rcall('HINCRBY', K.ctr, 'waiting', 1)
  return rec
end

-- Leases that ran out without an outcome give their ticket back to the head of the line.
-- Needs what returnToHead() needs, and K.leases.
-- Most expired leases one run reclaims for one item (scripts.ts lowers it where one run serves
-- many items: a run's length is every other client's wait; the lease sweep reclaims the rest).
local RECLAIM_LIMIT = 1000
local function reclaimExpired(now)
  local expired = rcall('ZRANGEBYSCORE', K.leases, '-inf', '(' .. fmt(now), 'LIMIT', 0, RECLAIM_LIMIT)
  for _, s in ipairs(expired) do
    local seq = tonumber(s)
    rcall('ZREM', K.leases, s)
    local record = getRecord(seq)
    if record and string.sub(record, 1, 1) == 'a' then
      returnToHead(seq, record, now)
    end
  end
  return #expired
end

-- Admits a waiting ticket under a new lease (leasePrefix .. seq, until now + leaseMs) and appends
-- { seq, record, payload, leaseId, leaseExp } to `out`. Needs K.ctr, K.leases, K.payloads.
-- Never admitted before it joined: a join whose `now` came a moment after the admission's may
-- reach Redis first (joins and admissions use different connections: infra/redis-client.ts), so
-- the admission's time is at least the join's (`epoch`: the item's, for the record's offset).
local function leaseTicket(out, seq, record, now, leasePrefix, leaseMs, epoch)
  now = math.max(now, recordCreated(record, epoch))
  local leaseId = leasePrefix .. fmt(seq)
  local exp = now + leaseMs
  setState(seq, record, 'a')
  rcall('HSET', keyOf.x(seq), 'lease', leaseId, 'leaseExp', fmt(exp), 'admittedAt', fmt(now), 'updatedAt', fmt(now))
  -- A new run: what an earlier run's end said (no effect; blocked if none) is not this one's, nor
  -- is the last write-back an earlier lease made (settle-9.lua answers a repeat of it `200`: a
  -- stale lease's retry, written again once this lease ran out, was taken as a repeat).
  rcall('HDEL', keyOf.x(seq), 'noEffect', 'ifNone', 'lastLease', 'lastStatus')
  rcall('ZADD', K.leases, exp, fmt(seq))
  rcall('HINCRBY', K.ctr, 'waiting', -1)
  rcall('HINCRBY', K.ctr, 'admitted', 1)
  local payload = rcall('HGET', K.payloads, fmt(seq)) or ''
  table.insert(out, seq)
  table.insert(out, record)
  table.insert(out, payload)
  table.insert(out, leaseId)
  table.insert(out, exp)
end
