--[[
  Admits the given waiting tickets of one sub-line of a split item, each under a new lease: the
  ones the admitting daemon chose by merging every sub-line's list (split-peek-5.lua). A ticket
  no longer waiting (cancelled, cut, admitted in another round) is skipped. Where the sub-line
  has stock (its share of the item's units, K.stock), each ticket takes its unit here, marked in
  K.taken as take-stock-2.lua marks it (so the handler's take finds it taken, and the line's
  scripts give it back to this sub-line's stock whenever they end the ticket without a sale);
  with no unit left the rest stay waiting. A ticket whose user is blocked (the sub-line's copy of
  the item's blocks: queue/definitions.ts copies each user's block to the user's sub-line) is not
  admitted: it ends rejected, reason blocked, as admit-12.lua ends it on an unsplit line (one back
  at the head of an item with stock waits in doubt instead: its sale may have committed).
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] retry  KEYS[4] wait  KEYS[5] leases  KEYS[6] payloads
  KEYS[7] stock  KEYS[8] taken  KEYS[9] blocked  KEYS[10] done  KEYS[11] doubt
  ARGV[1] now (ms, the caller's clock)  ARGV[2] leaseMs  ARGV[3] leasePrefix (random)
  ARGV[4..] seqs
  Returns { n, seq1, record1, payload1, leaseId1, leaseExp1, seq2, ... }
]]
-- @include _lib
local now, leaseMs, leasePrefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local cuts = loadCuts()
local stocked = rcall('EXISTS', K.stock) == 1
-- The field of this sub-line's stock with a unit left, or nil.
local function unitField()
  local flat = rcall('HGETALL', K.stock)
  for j = 1, #flat, 2 do
    if tonumber(flat[j + 1]) > 0 then return flat[j] end
  end
  return nil
end
local anyBlocked = rcall('EXISTS', K.blocked) == 1
local epoch = tonumber(rcall('HGET', K.meta, 'epoch'))
local blockedOutcome = cjson.encode({ status = 'rejected', reason = 'blocked' })
local out = { 0 }
for i = 4, #ARGV do
  local seq = tonumber(ARGV[i])
  local record = getRecord(seq)
  local waiting = record and string.sub(record, 1, 1) == 'w' and not cutFor(cuts, seq)
  if waiting and anyBlocked and rcall('HEXISTS', K.blocked, recordUser(record)) == 1 then
    rcall('ZREM', K.wait, ARGV[i])
    -- Back at the head, it was admitted: its effect may have happened (doubt), as on one line.
    if rcall('ZREM', K.retry, ARGV[i]) == 1 then
      doubtInstead(seq, record, now, blockedOutcome)
    else
      finish(seq, record, 'waiting', 'r', 'rejected', blockedOutcome, now)
    end
    waiting = false
  end
  local field = waiting and stocked and unitField()
  if waiting and stocked and not field then break end
  -- Its join number, kept on the ticket: back at the head (a lease run out, a retry) it is
  -- offered again in join order among the returned ones (split-peek-5.lua), not sub-line by sub-line.
  local num = rcall('ZSCORE', K.wait, ARGV[i])
  if num and waiting then rcall('HSET', keyOf.x(seq), 'jn', num) end
  if rcall('ZREM', K.wait, ARGV[i]) + rcall('ZREM', K.retry, ARGV[i]) > 0 and waiting then
    if field then
      rcall('HINCRBY', K.stock, field, -1)
      rcall('HSET', K.taken, ARGV[i], field)
    end
    leaseTicket(out, seq, record, now, leasePrefix, leaseMs, epoch)
    out[1] = out[1] + 1
  end
end
return out
