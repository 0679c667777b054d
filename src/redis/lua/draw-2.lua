--[[
  The pre-queue draw (queue/draw.ts has the algorithm), written in steps so that Redis is never
  held for long: `begin` fixes N (if the first join after opensAt has not already), the caller
  computes the order from the seed and writes it with `write` in chunks, and `finish` makes it the
  line's order in one step. Until then nothing is admitted (admit-5.lua), so every ticket waits
  behind the draw; joins after opensAt take seqs after N, so they come after every drawn ticket.
  Any daemon may run it, and two at once write the same bytes.
  KEYS[1] meta  KEYS[2] ctr
  ARGV[1] base  ARGV[2] now  ARGV[3] op: begin | write | finish
    begin:  Returns { 1, N, seed } to draw, { 2, N, seed } if drawn already, { -1 } before opensAt
            or for an item without a pre-queue
    write:  ARGV[4] first index (0-based) of the chunk, ARGV[5] order bytes (uint32 big-endian seqs
            for those line places), ARGV[6] position bytes (uint32 big-endian line places for seqs
            first+1 …). Returns the microseconds the step held Redis (by TIME)
    finish: Returns 1
  Keys written: <base>draw:o (line place k → seq at bytes 4(k−1)…), <base>draw:p (seq s → line
  place at bytes 4(s−1)…), meta drawN / drawn / drawnAt.
]]
local rcall = redis.call
local base, now, op = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if op == 'begin' then
  local m = rcall('HMGET', KEYS[1], 'preFrom', 'opensAt', 'drawN', 'drawn', 'drawSeed')
  if not m[1] or not m[2] or now < tonumber(m[2]) then return { -1 } end
  local n = m[3]
  if not n then
    n = rcall('HGET', KEYS[2], 'seq') or '0'
    rcall('HSET', KEYS[1], 'drawN', n)
  end
  n = tonumber(n)
  -- Both tables at full size now (one zeroed allocation each), so that no write step grows,
  -- and so copies, a string of megabytes.
  if m[4] ~= '1' and n > 0 then
    for _, k in ipairs({ base .. 'draw:o', base .. 'draw:p' }) do
      if rcall('STRLEN', k) < n * 4 then rcall('SETRANGE', k, n * 4 - 4, string.char(0, 0, 0, 0)) end
    end
  end
  return { m[4] == '1' and 2 or 1, n, m[5] }
elseif op == 'write' then
  local t0 = rcall('TIME')
  local first = tonumber(ARGV[4])
  rcall('SETRANGE', base .. 'draw:o', first * 4, ARGV[5])
  rcall('SETRANGE', base .. 'draw:p', first * 4, ARGV[6])
  local t1 = rcall('TIME')
  return (tonumber(t1[1]) - tonumber(t0[1])) * 1000000 + tonumber(t1[2]) - tonumber(t0[2])
else
  rcall('HSET', KEYS[1], 'drawn', '1')
  rcall('HSETNX', KEYS[1], 'drawnAt', ARGV[2])
  return 1
end
