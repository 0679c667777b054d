--[[
  Ends every ticket still waiting, at once, without touching each (see "cuts" in _lib): used when
  an item is closed (waiting -> cancelled) or sells out (waiting -> rejected).
  Tickets back at the head (K.retry) do not end: they were admitted before, and their effect may
  have happened (a sale committed, a webhook answered, before a lease ran out), so they wait in
  doubt for their outcome (holdInDoubt in _lib) — except those back because their lease's holder
  wrote back a retry (x.noEffect): known to have had no effect, they end with the cut, unless
  `hold` below names them (a Redis rollback took back a later run that had its effect: a worker's
  `succeeded` after another's retry, which the outcome ledger holds; cut, its user was told
  `cancelled` next to it).
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] retry  KEYS[4] done  KEYS[5] doubt  KEYS[6] payloads
  KEYS[7] stock  KEYS[8] taken
  ARGV[1] now (ms, the caller's clock)  ARGV[2] stateChar (c|r)  ARGV[3] reason
  ARGV[4] flag: the meta field to set ('closed'|'soldOut')
  ARGV[5] decidedAt: for a sell-out, when the caller began the Postgres read that found no unit
    (ms, '' = not asked): a sell-out is refused (-2) if the item's units were set since
    (set-stock-4.lua's stockSetAt: an operator's restock, a reconcile), for Postgres held them by
    then — the read was old, and its cut would tell every waiting user "sold out" falsely.
  ARGV[6] windowEnd: '1' for the close at the end of the sale window, refused (-3) unless the
    item's closesAt, as it is now, has passed by `now`: an operator who moved closesAt later after
    the caller read the item (a read afresh a moment before) keeps the sale open, not every
    waiting user told `closed`.
  ARGV[7] hold: seqs (comma-separated) of waiting tickets whose effect Postgres holds (an order or
    a claim under the ticket's ref: a Redis rollback took back their admission and sale, and the
    line has them waiting again). Still waiting here, they wait in doubt instead, as those back at
    the head do, and end with Postgres's word (the doubt resolver); cut, each was told `sold_out`
    or `closed` next to its order. The cut's record counts them (its 6th field), so a daemon does
    not answer its range from the cut alone.
  A sell-out so decided is refused as well while the meta's `stockPending` (ms) is ahead of now.
  Returns the number of tickets that ended, -1 for an unknown item, -2 for a sell-out refused,
  -3 for a window's end refused.
]]
-- @include _lib
if rcall('EXISTS', K.meta) == 0 then return -1 end
local now, stateChar, reason, flag = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if flag == 'soldOut' and ARGV[5] ~= '' and tonumber(rcall('HGET', K.meta, 'stockSetAt') or '0') > tonumber(ARGV[5]) then return -2 end
-- Nor while an operator's change of the stock is under way (`stockPending`, until the time it
-- holds: written before its Postgres write, taken away by its set-stock-4.lua): a restock that
-- committed in Postgres after the sale's read and before its own Redis step was undone by this cut.
if flag == 'soldOut' and ARGV[5] ~= '' and tonumber(rcall('HGET', K.meta, 'stockPending') or '0') > tonumber(now) then return -2 end
if ARGV[6] == '1' then
  local closesAt = tonumber(rcall('HGET', K.meta, 'closesAt') or '')
  if not closesAt or closesAt > tonumber(now) then return -3 end
end
rcall('HSET', K.meta, flag, '1')
rcall('HSETNX', K.meta, 'endedAt', now)
local heldBack = {}
for s in string.gmatch(ARGV[7], '%d+') do heldBack[s] = true end
for _, s in ipairs(rcall('ZRANGE', K.retry, 0, -1)) do
  local record = getRecord(tonumber(s))
  if record and string.sub(record, 1, 1) == 'w' then
    -- Back after its holder's retry (x.noEffect): known to have had no effect, it ends with this
    -- cut — unless Postgres holds an effect of it (a later run's, which a rollback took back).
    if rcall('HGET', keyOf.x(tonumber(s)), 'noEffect') == '1' and not heldBack[s] then
      endWithoutEffect(tonumber(s), record, 'waiting', { 0, stateChar, reason }, tonumber(now))
    else
      doubtInstead(tonumber(s), record, tonumber(now), nil)
    end
  end
end
rcall('DEL', K.retry)
local held = 0
local cuts = loadCuts()
-- (Not one an earlier cut ended: a cut leaves the records of what it ended as they were, and two
-- cuts at once — a close while a sell-out read Postgres — brought such a ticket back into doubt.)
local endedUpTo = lastCutSeq(cuts)
for s in string.gmatch(ARGV[7], '%d+') do
  local record = tonumber(s) > endedUpTo and getRecord(tonumber(s))
  if record and string.sub(record, 1, 1) == 'w' then
    doubtInstead(tonumber(s), record, tonumber(now), nil)
    held = held + 1
  end
end
local seq = tonumber(rcall('HGET', K.ctr, 'seq') or '0')
local waiting = tonumber(rcall('HGET', K.ctr, 'waiting') or '0')
local served = tonumber(rcall('HGET', K.ctr, 'served') or '0')
-- A cut is recorded for admitted tickets too, and those in doubt: it is the outcome a ticket gets
-- whose lease runs out later if its effect did not happen (without it, such a ticket went back to
-- the head of a closed line, where nothing would take it).
local admitted = tonumber(rcall('HGET', K.ctr, 'admitted') or '0')
if waiting > 0 or admitted > 0 then
  -- The ledger finds this cut's tickets among the seqs after the previous cut.
  rcall('XADD', K.done, '*', 'from', fmt(lastCutSeq(cuts) + 1), 'to', fmt(seq))
  -- The 5th field (served before the cut) lets a daemon tell from its cached view alone which
  -- tickets this cut ended: those after it, up to seq, that had not left the line.
  local entry = { seq, stateChar, reason, tonumber(now), served }
  if held > 0 then entry[6] = held end
  table.insert(cuts, entry)
  rcall('HSET', K.meta, 'cuts', cjson.encode(cuts))
  rcall('HSET', K.ctr, 'served', fmt(seq), 'waiting', 0)
  rcall('HINCRBY', K.ctr, stateByChar[stateChar], waiting)
  rcall('DEL', K.retry)
end
return waiting
