--[[
  Admits up to `max` tickets from the head of the line, as far as the gate allows right now.
  Expired leases are reclaimed first, so a ticket whose lease ran out is offered again before
  any later ticket. Returned tickets (retry set) go before the line; the line is walked from
  served+1 (a line place: after a pre-queue draw, places 1..drawN hold the drawn seqs), skipping
  cancelled tickets and those a cut ended, and expiring abandoned ones (at most 1000 skips a call).
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] gate  KEYS[4] retry (zset seq)  KEYS[5] leases (zset exp)
  KEYS[6] payloads  KEYS[7] blocked  KEYS[8] stock  KEYS[9] taken  KEYS[10] done  KEYS[11] drawOrder  KEYS[12] doubt
  ARGV[1] now (ms, the caller's clock)  ARGV[2] max  ARGV[3] leaseMs  ARGV[4] leasePrefix (random)
  ARGV[5] autoCap: the in-flight cap of an auto gate its controller has not spoken for ('' = none)
  ARGV[6] version: the item's definition version the caller will run the tickets under ('' = any):
    another nothing is admitted (code 3): an operator redefined the item since the caller read it,
    and its tickets would have run under the old handler or config (coupon claims made for a
    seckill item, orders without the reservation just asked for, calls to the old URL)
  A waiting ticket whose user is blocked (K.blocked, for the item or everywhere) is not
  admitted: it ends rejected, reason blocked, and counts as a skip; one back at the head of an
  item with stock or of an external item (it was admitted, its effect may have happened) waits
  in doubt instead.
  Returns { code, n, seq1, record1, payload1, leaseId1, leaseExp1, seq2, ... }
    code 0 ok, 1 ok and the line is empty now (it held fewer tickets than the gate allowed: the
    dispatcher asks again a little later, dispatcher.ts), -1 item not found, -2 the sale window
    has ended (closesAt passed: the caller cuts the line as closed; nothing is admitted after
    closesAt); nothing is admitted before opensAt either, 2 nothing admitted, for the pace alone
    (tickets may wait, the other limits allowed some): n = ms until the pace lets the next one;
    3 nothing admitted, the caller's view of the item is older than its definition (ARGV[6])
    in (at least 1), when the dispatcher comes back for the item (dispatcher.ts)
  Items with stock (K.stock) admit at most as many tickets as the counter has units, and
  none while it is empty: a ticket admitted without a unit for it could only wait. Each admitted
  ticket takes its unit here (takeUnit, as take-stock-2.lua does): when the counter only fell as
  the handlers took units, rounds that came faster than the jobs admitted the same units again
  (a sale spread over 200 items admitted twice its stock, and half of it ended sold out after a job).
  Gate (K.gate): mode (auto|manual|closed), rate (per s, '' = none), maxInFlight ('' =
  none), tatAt + tatOff (GCRA theoretical arrival time, ms: a whole-ms epoch plus an offset),
  aLimit / aRate (the adaptive controller's in-flight limit and pace; see _gate.lua).
  A pace of `rate` with a burst tolerance of max(1, rate * 0.1) tickets: over any interval
  admissions stay within rate * (t + slack) + burst (a late admission is credited its lateness, up
  to half an interval or 50 ms: _gate.lua), and an idle line admits at least one at once.
  The GCRA works on times relative to floor(now): a clock near 1.8e12 ms keeps only ~1e-4 ms of
  precision, and `now + burst * interval - tat` computed at that scale came out a hair under one
  interval, so an idle line admitted nobody at rates such as 3/s.
]]
-- @include _lib
-- @include _gate
local now, max, leaseMs, leasePrefix = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if rcall('EXISTS', K.meta) == 0 then return { -1, 0 } end
if ARGV[6] ~= '' and (tonumber(rcall('HGET', K.meta, 'version') or '0') or 0) ~= tonumber(ARGV[6]) then return { 3, 0 } end
reclaimExpired(now)
local closesAt = tonumber(rcall('HGET', K.meta, 'closesAt') or '')
if closesAt and now >= closesAt then return { -2, 0 } end
-- Not open yet (an operator moved opensAt into the future on a live line): nobody is admitted
-- before it, as nobody may join before it; the line is woken then (queue/items.ts loopNeed).
local opensAt = tonumber(rcall('HGET', K.meta, 'opensAt') or '')
if opensAt and now < opensAt then return { 0, 0 } end

-- A pre-queue is admitted only once drawn (draw-4.lua); then line places 1..drawN map to seqs.
local pre = rcall('HMGET', K.meta, 'preFrom', 'drawn', 'drawN')
if pre[1] and pre[2] ~= '1' then return { 0, 0 } end
local drawN = pre[2] == '1' and tonumber(pre[3]) or 0
local function seqAt(place)
  if place > drawN then return place end
  return struct.unpack('>I4', rcall('GETRANGE', K.drawOrder, (place - 1) * 4, place * 4 - 1))
end

local gate = rcall('HMGET', K.gate, 'mode', 'rate', 'maxInFlight', 'tatAt', 'aLimit', 'aRate', 'tatOff')
if gate[1] == 'closed' then return { 0, 0 } end
local allowed = max
local stocked = rcall('EXISTS', K.stock) == 1
if stocked then
  allowed = math.min(allowed, unitsOnCounter())
end
local rate, mif = effectiveGate(gate[1], gate[2], gate[3], gate[5], gate[6], ARGV[5])
if mif then
  allowed = math.min(allowed, mif - tonumber(rcall('HGET', K.ctr, 'admitted') or '0'))
end
local paced, recordPace, due = paceNow(rate, gate[4], gate[7], now)
local unpaced = allowed
allowed = math.min(allowed, paced)
if allowed <= 0 then
  -- The pace alone holds them: say when it lets the next one in.
  if unpaced > 0 then return { 2, math.max(1, due) } end
  return { 0, 0 }
end

local meta = rcall('HMGET', K.meta, 'abandonAfterMs', 'epoch', 'abandonSince')
local abandonMs, epoch = tonumber(meta[1] or ''), tonumber(meta[2])
-- Polls are recorded only while abandonment is on (queue/tickets.ts), so a ticket is judged idle
-- only from when it was switched on (define-5.lua keeps the time), not from its join: holders
-- who had polled a moment before an operator switched it on were expired at once.
local abandonSince = tonumber(meta[3] or '') or epoch
local served = tonumber(rcall('HGET', K.ctr, 'served') or '0')
local last = tonumber(rcall('HGET', K.ctr, 'seq') or '0')
local out = { 0, 0 }
local taken, skips = 0, 0
-- A record still 'w' that a cut covers ended with the cut (its user was told so). Walking from
-- served + 1 passes no such seq in join order, as the cut moved served to its seq; a draw maps
-- places to seqs, and one that took in a cut seq (a pre-queue redefined around a close: the
-- catalog refuses that, but only before the define) must not admit it. So the cuts are read only
-- for a drawn line's places; cuts come in seq order, so a seq after the last one's is tested
-- without going through them.
local cuts = drawN > 0 and loadCuts() or {}
local lastCut = lastCutSeq(cuts)
local function endedByCut(seq)
  return seq <= lastCut and cutFor(cuts, seq) ~= nil
end

local anyBlocked = rcall('EXISTS', K.blocked) == 1
local blockedOutcome = cjson.encode({ status = 'rejected', reason = 'blocked' })
-- Ends the ticket instead when its user is blocked; returns whether it did.
local function endIfBlocked(seq, record)
  if not anyBlocked or rcall('HEXISTS', K.blocked, recordUser(record)) == 0 then return false end
  finish(seq, record, 'waiting', 'r', 'rejected', blockedOutcome, now)
  return true
end

local function admit(seq, record)
  leaseTicket(out, seq, record, now, leasePrefix, leaseMs, epoch)
  -- The ticket takes its unit as it is admitted: the counter then holds only units nobody in
  -- flight holds, so the next round cannot admit past the stock however long the jobs take.
  if stocked then takeUnit(seq) end
  taken = taken + 1
end

while taken < allowed do
  local popped = rcall('ZPOPMIN', K.retry)
  if #popped == 0 then break end
  local seq = tonumber(popped[1])
  local record = getRecord(seq)
  if record and string.sub(record, 1, 1) == 'w' then
    -- A blocked user's ticket back at the head was admitted: its effect may have happened before
    -- its lease ran out (a sale committed, an outside worker's write-back late, a webhook call
    -- that went on), so it waits in doubt and ends with what happened — Postgres's row, the
    -- worker's or the run's outcome — "blocked" if nothing did. (An external ticket was told
    -- "blocked" at once and its late write-back refused; a webhook one too, while its call made
    -- the order.) Such a ticket is never run again (relaunch-4.lua): that would serve the user.
    if anyBlocked and rcall('HEXISTS', K.blocked, recordUser(record)) == 1 then
      doubtInstead(seq, record, now, blockedOutcome)
    else
      admit(seq, record)
    end
  end
end

while taken < allowed and served < last and skips < 1000 do
  served = served + 1
  local seq = seqAt(served)
  local record = getRecord(seq)
  if record and string.sub(record, 1, 1) == 'w' and not endedByCut(seq) then
    local idle = false
    if abandonMs then
      local seen = tonumber(rcall('HGET', keyOf.pollPage(seq), fmt(seq)) or '')
      local created = recordCreated(record, epoch)
      idle = now - math.max(seen or 0, created, abandonSince) > abandonMs
    end
    if idle then
      finish(seq, record, 'waiting', 'e', 'expired', cjson.encode({ status = 'expired', reason = 'abandoned' }), now)
      skips = skips + 1
    elseif endIfBlocked(seq, record) then
      skips = skips + 1
    else
      admit(seq, record)
    end
  else
    skips = skips + 1
  end
end
rcall('HSET', K.ctr, 'served', fmt(served))
if taken > 0 then
  rcall('HINCRBY', K.ctr, 'admissions', taken)
  recordPace(taken)
end
out[2] = taken
-- Fewer taken than allowed, and not for the skip limit: the retry set and the line ran out.
if taken < allowed and skips < 1000 then out[1] = 1 end
return out
