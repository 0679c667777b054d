--[[
  Admits up to ARGV[3] tickets from the head of the line, as far as the gate allows right now.
  Expired leases are reclaimed first, so a ticket whose lease ran out is offered again before
  any later ticket. Returned tickets (retry set) go before the line; the line is walked from
  served+1 (a line place: after a pre-queue draw, places 1..drawN hold the drawn seqs), skipping cancelled tickets and expiring abandoned ones (at most 1000 skips a call).
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] gate  KEYS[4] retry (zset seq)  KEYS[5] leases (zset exp)
  ARGV[1] base  ARGV[2] now  ARGV[3] max  ARGV[4] leaseMs  ARGV[5] lease id prefix (random)
  ARGV[6] in-flight cap to apply when the gate sets none and is in auto mode ('' = none)
  A waiting ticket whose user is blocked (hash <base>blocked, for the item or everywhere) is not
  admitted: it ends rejected, reason blocked, and counts as a skip.
  Returns { code, n, seq1, record1, payload1, leaseId1, leaseExp1, seq2, ... }
    code 0 ok, -1 item not found, -2 the sale window has ended (closesAt passed: the caller cuts
    the line as closed; nothing is admitted after closesAt)
  Items with stock (hash <base>stock) admit at most as many tickets as the counter has units, and
  none while it is empty: a ticket admitted without a unit for it could only wait.
  Gate (hash KEYS[3]): mode (auto|manual|closed), rate (per s, '' = none), maxInFlight ('' =
  none), tatAt + tatOff (GCRA theoretical arrival time, ms: a whole-ms epoch plus an offset),
  aLimit / aRate (the adaptive controller's in-flight limit and pace, obeyed in auto mode only).
  A pace of `rate` with a burst tolerance of max(1, rate * 0.1) tickets: over any interval
  admissions stay within rate * t + burst, and an idle line admits at least one at once.
  The GCRA works on times relative to floor(now): a clock near 1.8e12 ms keeps only ~1e-4 ms of
  precision, and `now + burst * interval - tat` computed at that scale came out a hair under one
  interval, so an idle line admitted nobody at rates such as 3/s.
]]
-- @include _lib
local base, now, max, leaseMs, leasePrefix = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
if rcall('EXISTS', KEYS[1]) == 0 then return { -1, 0 } end
reclaimExpired(base, KEYS[1], KEYS[2], KEYS[5], KEYS[4], now)
local closesAt = tonumber(rcall('HGET', KEYS[1], 'closesAt') or '')
if closesAt and now >= closesAt then return { -2, 0 } end

-- A pre-queue is admitted only once drawn (draw-2.lua); then line places 1..drawN map to seqs.
local pre = rcall('HMGET', KEYS[1], 'preFrom', 'drawn', 'drawN')
if pre[1] and pre[2] ~= '1' then return { 0, 0 } end
local drawN = pre[2] == '1' and tonumber(pre[3]) or 0
local function seqAt(place)
  if place > drawN then return place end
  return struct.unpack('>I4', rcall('GETRANGE', base .. 'draw:o', (place - 1) * 4, place * 4 - 1))
end

local gate = rcall('HMGET', KEYS[3], 'mode', 'rate', 'maxInFlight', 'tatAt', 'aLimit', 'aRate', 'tatOff')
if gate[1] == 'closed' then return { 0, 0 } end
local allowed = max
if rcall('EXISTS', base .. 'stock') == 1 then
  local units = 0
  for _, v in ipairs(rcall('HVALS', base .. 'stock')) do units = units + math.max(0, tonumber(v)) end
  allowed = math.min(allowed, units)
end
local mif = tonumber(gate[3] or '')
local rate = tonumber(gate[2] or '')
if gate[1] ~= 'manual' then
  -- auto: the controller's limit and pace, under the operator's ceilings; before the controller
  -- has spoken, the caller's default cap.
  local aLimit, aRate = tonumber(gate[5] or ''), tonumber(gate[6] or '')
  if aLimit then mif = math.min(mif or aLimit, aLimit) elseif not mif then mif = tonumber(ARGV[6] or '') end
  if aRate then rate = math.min(rate or aRate, aRate) end
end
if mif then
  allowed = math.min(allowed, mif - tonumber(rcall('HGET', KEYS[2], 'admitted') or '0'))
end
local interval, epoch, lag = 0, math.floor(now), 0
if rate and rate > 0 then
  interval = 1000 / rate
  -- lag = max(tat, now) - now, every term small: whole-ms differences are exact, offsets < 1 day.
  local tatAt, tatOff = tonumber(gate[4] or ''), tonumber(gate[7] or '')
  if tatAt and tatOff then lag = math.max(0, (tatAt - epoch) + tatOff - (now - epoch)) end
  local burst = math.max(1, rate * 0.1)
  allowed = math.min(allowed, math.floor(burst - lag / interval + 1e-9))
end
if allowed <= 0 then return { 0, 0 } end

local meta = rcall('HMGET', KEYS[1], 'abandonAfterMs', 'epoch')
local abandonMs, epoch = tonumber(meta[1] or ''), tonumber(meta[2])
local served = tonumber(rcall('HGET', KEYS[2], 'served') or '0')
local last = tonumber(rcall('HGET', KEYS[2], 'seq') or '0')
local out = { 0, 0 }
local taken, skips = 0, 0

local blockedKey = base .. 'blocked'
local anyBlocked = rcall('EXISTS', blockedKey) == 1
local blockedOutcome = cjson.encode({ status = 'rejected', reason = 'blocked' })
-- Ends the ticket instead when its user is blocked; returns whether it did.
local function endIfBlocked(seq, record)
  if not anyBlocked or rcall('HEXISTS', blockedKey, recordUser(record)) == 0 then return false end
  finish(base, KEYS[2], seq, record, 'waiting', 'r', 'rejected', blockedOutcome, now)
  return true
end

local function admit(seq, record)
  local leaseId = leasePrefix .. fmt(seq)
  local exp = now + leaseMs
  setState(base, seq, record, 'a')
  rcall('HSET', base .. 'x:' .. fmt(seq), 'lease', leaseId, 'leaseExp', fmt(exp), 'admittedAt', fmt(now), 'updatedAt', fmt(now))
  rcall('ZADD', KEYS[5], exp, fmt(seq))
  rcall('HINCRBY', KEYS[2], 'waiting', -1)
  rcall('HINCRBY', KEYS[2], 'admitted', 1)
  local payload = rcall('HGET', base .. 'pl', fmt(seq)) or ''
  table.insert(out, seq)
  table.insert(out, record)
  table.insert(out, payload)
  table.insert(out, leaseId)
  table.insert(out, exp)
  taken = taken + 1
end

while taken < allowed do
  local popped = rcall('ZPOPMIN', KEYS[4])
  if #popped == 0 then break end
  local seq = tonumber(popped[1])
  local record = getRecord(base, seq)
  if record and string.sub(record, 1, 1) == 'w' and not endIfBlocked(seq, record) then admit(seq, record) end
end

while taken < allowed and served < last and skips < 1000 do
  served = served + 1
  local seq = seqAt(served)
  local record = getRecord(base, seq)
  if record and string.sub(record, 1, 1) == 'w' then
    local idle = false
    if abandonMs then
      local seen = tonumber(rcall('HGET', base .. 'p:' .. fmt(math.floor(seq / 128)), fmt(seq)) or '')
      local created = epoch + tonumber(string.match(record, '^w(%d+)|'))
      idle = now - math.max(seen or 0, created) > abandonMs
    end
    if idle then
      finish(base, KEYS[2], seq, record, 'waiting', 'e', 'expired', cjson.encode({ status = 'expired', reason = 'abandoned' }), now)
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
rcall('HSET', KEYS[2], 'served', fmt(served))
if taken > 0 then
  rcall('HINCRBY', KEYS[2], 'admissions', taken)
  if interval > 0 then
    rcall('HSET', KEYS[3], 'tatAt', fmt(epoch), 'tatOff', string.format('%.17g', (now - epoch) + lag + taken * interval))
  end
end
out[2] = taken
return out
