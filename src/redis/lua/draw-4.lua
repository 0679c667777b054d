--[[
  The pre-queue draw (queue/draw.ts has the algorithm), written in steps so that Redis is never
  held for long: `begin` fixes N (a join at or after opensAt waits for it: join-5.lua), the caller
  computes the order from the seed and writes it with `write` in chunks, and `finish` makes it the
  line's order in one step. Until then nothing is admitted (admit-12.lua), so every ticket waits
  behind the draw; joins after opensAt take seqs after N, so they come after every drawn ticket.
  Any daemon may run it, and two at once write the same bytes.
  Between `begin` and the writes the caller records N in Postgres (the first record wins) and, when
  the recorded N is not the one Redis fixed, begins again with it as `size`: Redis was rolled back
  past the draw (its join counter, and so N, went back), and the draw made again must be over the
  N the first one was shown with. The seqs of 1..N that Redis lost are holes in it, skipped at
  admission as cancelled tickets are. The join counter is raised to N then, so a join after the
  rollback takes a seq after the draw's, never one of its holes.
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] drawOrder  KEYS[4] drawPlaces
  ARGV[1] now (ms, the caller's clock)  ARGV[2] op: begin | peek | write | finish
  ARGV[3] first: write's first index (0-based) of the chunk ('' otherwise)
  ARGV[4] order: write's order bytes (uint32 big-endian seqs for those line places; '' otherwise)
  ARGV[5] places: write's position bytes (uint32 big-endian line places for seqs first+1 …)
  ARGV[6] size: begin's N as Postgres recorded it ('' otherwise: N as Redis has it, fixed from the
    join counter if not yet); not applied to a pre-queue drawn already
    begin:  Returns { 1, N, seed } to draw, { 2, N, seed } if drawn already, { -1 } before opensAt
            or for an item without a pre-queue
    peek:   As begin, but fixes nothing: the N begin would fix (the caller keeps it in Postgres
            first, then begins with the size kept; a begin that fixed N before Postgres could
            keep it left joins after a rollback taking seqs inside the draw while it waited);
            marks meta drawPeek, after which a join stamped before opensAt waits as one after it
    write:  Returns the microseconds the step held Redis (by TIME)
    finish: Returns 1
  Keys written: K.drawOrder (line place k → seq at bytes 4(k−1)…), K.drawPlaces (seq s → line
  place at bytes 4(s−1)…), meta drawN / drawn / drawnAt / drawPeek.
]]
local rcall = redis.call
local now, op = tonumber(ARGV[1]), ARGV[2]
if op == 'begin' or op == 'peek' then
  local m = rcall('HMGET', K.meta, 'preFrom', 'opensAt', 'drawN', 'drawn', 'drawSeed')
  if not m[1] or not m[2] or now < tonumber(m[2]) then return { -1 } end
  local n = m[3]
  if op == 'peek' then
    -- (Marked: a join stamped a moment before opensAt, from here on, waits for N as one at the
    -- opening does, instead of taking a seq between this N and the one begin fixes: join-5.lua.)
    if m[4] ~= '1' then rcall('HSETNX', K.meta, 'drawPeek', ARGV[1]) end
    return { m[4] == '1' and 2 or 1, tonumber(n or rcall('HGET', K.ctr, 'seq') or '0'), m[5] }
  end
  if m[4] ~= '1' and ARGV[6] ~= '' then
    n = ARGV[6]
    rcall('HSET', K.meta, 'drawN', n)
    if tonumber(rcall('HGET', K.ctr, 'seq') or '0') < tonumber(n) then rcall('HSET', K.ctr, 'seq', n) end
  elseif not n then
    n = rcall('HGET', K.ctr, 'seq') or '0'
    rcall('HSET', K.meta, 'drawN', n)
  end
  n = tonumber(n)
  -- Both tables at full size now (one zeroed allocation each), so that no write step grows,
  -- and so copies, a string of megabytes.
  if m[4] ~= '1' and n > 0 then
    for _, k in ipairs({ K.drawOrder, K.drawPlaces }) do
      if rcall('STRLEN', k) < n * 4 then rcall('SETRANGE', k, n * 4 - 4, string.char(0, 0, 0, 0)) end
    end
  end
  return { m[4] == '1' and 2 or 1, n, m[5] }
elseif op == 'write' then
  local t0 = rcall('TIME')
  local first = tonumber(ARGV[3])
  rcall('SETRANGE', K.drawOrder, first * 4, ARGV[4])
  rcall('SETRANGE', K.drawPlaces, first * 4, ARGV[5])
  local t1 = rcall('TIME')
  return (tonumber(t1[1]) - tonumber(t0[1])) * 1000000 + tonumber(t1[2]) - tonumber(t0[2])
else
  rcall('HSET', K.meta, 'drawn', '1')
  rcall('HSETNX', K.meta, 'drawnAt', ARGV[1])
  return 1
end
