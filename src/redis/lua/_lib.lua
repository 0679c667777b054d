-- Shared helpers, spliced into scripts by `-- @include _lib`.
-- Ticket records live in pages of 128 (hash `<base>t:<page>`, field = seq) so each page stays a
-- compact listpack; a record is "<state char><createdAt - epoch, ms>|<userId>".
-- State chars: w waiting, a admitted, s succeeded, r rejected, f failed, c cancelled, e expired.
local rcall = redis.call
local fmt = function(n) return string.format('%d', n) end

local function pageKey(base, seq)
  return base .. 't:' .. fmt(math.floor(seq / 128))
end

-- The name of the key that created each ticket, paged like the records (only where one was given).
local function sourcePageKey(base, seq)
  return base .. 'src:' .. fmt(math.floor(seq / 128))
end

local function getRecord(base, seq)
  return rcall('HGET', pageKey(base, seq), fmt(seq))
end

local function setState(base, seq, record, stateChar)
  local rec = stateChar .. string.sub(record, 2)
  rcall('HSET', pageKey(base, seq), fmt(seq), rec)
  return rec
end

local function recordUser(record)
  local bar = string.find(record, '|', 1, true)
  return string.sub(record, bar + 1)
end

-- The cuts: when an item closes or sells out, every ticket still waiting at that moment ends at
-- once. Instead of touching each ticket, a cut {seq, state, reason} is appended to meta.cuts; a
-- record still marked 'w' whose seq is <= a cut's seq has ended with the first such cut.
local function loadCuts(metaKey)
  local raw = rcall('HGET', metaKey, 'cuts')
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

-- Gives back the unit of stock a ticket took (seckill, coupon), if it holds one: whatever ends a
-- ticket without a sale, or returns it to the line, puts its unit back in the counter at once, so
-- a unit is never stranded on a ticket that will not buy it. Idempotent (the `taken` entry goes).
local function releaseUnit(base, seq)
  local takenKey = base .. 'taken'
  local shard = rcall('HGET', takenKey, fmt(seq))
  if shard then
    rcall('HDEL', takenKey, fmt(seq))
    rcall('HINCRBY', base .. 'stock', shard, 1)
  end
end

-- Ends a ticket: record state, outcome and times in x:<seq>, counters moved, and the ticket
-- announced on the item's `done` stream, which feeds the outcome ledger in Postgres. The entry
-- carries everything the ledger writes (record, outcome, times), so reading it costs no further
-- round trip per ticket.
local function finish(base, ctrKey, seq, record, fromCounter, stateChar, status, outcomeJson, now)
  if stateChar ~= 's' then releaseUnit(base, seq) end
  -- An ended ticket's payload is never read again (its order row keeps its own copy).
  rcall('HDEL', base .. 'pl', fmt(seq))
  local rec = setState(base, seq, record, stateChar)
  local xKey = base .. 'x:' .. fmt(seq)
  local admittedAt = rcall('HGET', xKey, 'admittedAt') or ''
  local source = rcall('HGET', sourcePageKey(base, seq), fmt(seq)) or ''
  rcall('XADD', base .. 'done', '*', 's', fmt(seq), 'r', rec, 'o', outcomeJson, 'a', admittedAt, 'f', fmt(now), 'k', source)
  rcall('HSET', xKey, 'outcome', outcomeJson, 'updatedAt', fmt(now), 'finishedAt', fmt(now))
  rcall('HINCRBY', ctrKey, fromCounter, -1)
  rcall('HINCRBY', ctrKey, status, 1)
  return rec
end

local stateByChar = { s = 'succeeded', r = 'rejected', f = 'failed', c = 'cancelled', e = 'expired' }

-- Puts an admitted ticket back at the head of the line (expired lease or retry). If the item was
-- cut (closed / sold out) after the ticket joined, it ends with that cut instead.
local function returnToHead(base, metaKey, ctrKey, retryKey, seq, record, now)
  local cut = cutFor(loadCuts(metaKey), seq)
  if cut then
    local outcome = cjson.encode({ status = stateByChar[cut[2]], reason = cut[3] })
    return finish(base, ctrKey, seq, record, 'admitted', cut[2], stateByChar[cut[2]], outcome, now)
  end
  releaseUnit(base, seq)
  local rec = setState(base, seq, record, 'w')
  rcall('HDEL', base .. 'x:' .. fmt(seq), 'lease', 'leaseExp')
  rcall('HSET', base .. 'x:' .. fmt(seq), 'updatedAt', fmt(now))
  rcall('ZADD', retryKey, seq, fmt(seq))
  rcall('HINCRBY', ctrKey, 'admitted', -1)
  rcall('HINCRBY', ctrKey, 'waiting', 1)
  return rec
end

-- Leases that ran out without an outcome give their ticket back to the head of the line.
local function reclaimExpired(base, metaKey, ctrKey, leasesKey, retryKey, now)
  local expired = rcall('ZRANGEBYSCORE', leasesKey, '-inf', '(' .. fmt(now), 'LIMIT', 0, 1000)
  for _, s in ipairs(expired) do
    local seq = tonumber(s)
    rcall('ZREM', leasesKey, s)
    local record = getRecord(base, seq)
    if record and string.sub(record, 1, 1) == 'a' then
      returnToHead(base, metaKey, ctrKey, retryKey, seq, record, now)
    end
  end
  return #expired
end
