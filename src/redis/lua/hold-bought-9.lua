--[[
  Takes waiting tickets whose sale Postgres holds out of the line, wherever they stand, and holds
  them in doubt, on an item no cut ends: a Redis rollback took back their admission and sale and
  put them back in the line, where, on an item held on its reservations (every unit sold or
  reserved), no unit comes back to admit them (their users read `waiting` beside their
  reservations until those ran out, and the units then went to the next in line). Each one leaves
  the line as a cancel leaves it (on one line its entry on the cancel stream tells every daemon's
  cached view that it waits no more, and moves the places behind it up) and waits admitted in doubt
  (doubtInstead in _lib), holding no unit of the counter (its unit is its order's): the doubt
  resolver runs it again, and its sale, idempotent per ticket, answers its own order. A ticket no
  longer waiting, or one a cut ended, is left alone, so the script may run twice for one ticket.
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] retry  KEYS[4] doubt  KEYS[5] payloads  KEYS[6] stock
  KEYS[7] taken  KEYS[8] done  KEYS[9] cx
  ARGV[1] now (ms, the caller's clock)
  ARGV[2..] seqs of the tickets to hold
  Returns the number of tickets held.
]]
-- @include _lib
if rcall('EXISTS', K.meta) == 0 then return 0 end
local now = tonumber(ARGV[1])
local cuts = loadCuts()
-- (A split item's sub-lines feed no cached view: they append nothing, as for a cancel.)
local oneLine = (tonumber(rcall('HGET', K.meta, 'lines') or '1') or 1) <= 1
local held = 0
for i = 2, #ARGV do
  local seq = tonumber(ARGV[i])
  local record = getRecord(seq)
  if record and string.sub(record, 1, 1) == 'w' and not cutFor(cuts, seq) then
    doubtInstead(seq, record, now, nil)
    -- (Back at the head after a lease ran out: it leaves that list too.)
    rcall('ZREM', K.retry, fmt(seq))
    local n = rcall('HINCRBY', K.ctr, 'cxn', 1)
    if oneLine then rcall('XADD', K.cx, '*', 's', fmt(seq), 'n', fmt(n)) end
    held = held + 1
  end
end
return held
