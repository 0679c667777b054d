--[[
  A user leaves the line. Only a waiting ticket can be cancelled.
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] users  KEYS[4] retry  KEYS[5] payloads  KEYS[6] stock
  KEYS[7] taken  KEYS[8] done  KEYS[9] cx
  ARGV[1] now (ms, the caller's clock)  ARGV[2] seq  ARGV[3] outcome JSON
  ARGV[4] record: the one the caller verified the ticket id against, without its state char (a
    record that differs is another ticket at the same seq, e.g. after a Redis rollback: not found)
  Returns 1 cancelled, -1 not found, -2 not cancellable: not waiting, or cut; -3 not cancellable:
    back at the head (K.retry) after a lease ran out — admitted before, its effect may have happened (a sale
    committed, a webhook answered, before its lease ran out), and "cancelled" would then be
    false; it runs again. A ticket back at the head because its lease's holder wrote back a retry
    (x.noEffect, returnToHead in _lib: its run had no effect and that lease can write nothing
    more) is cancellable: no lease of it is out, and only an admission (which it leaves) would
    give one.
  Each cancel of a ticket still in the line is appended to the stream `cx` (its seq, and `n`: the
  item's cancel count with it), so daemons that answer polls from their cache learn of it within
  their refresh period. The stream is not capped: a cap trimmed it by count, and a daemon that read
  it afresh (a start, a rollback) missed cancels still ahead of the head and told places too far
  back (20 for 10 after 100,000 cancels). Entries leave it once the head has passed them
  (trim-cancels-3.lua). A split item's sub-lines feed no cache (their places are read from Redis):
  they append nothing.
  An outcome that names another end than `cancelled` (`expired`, `rejected`, `failed`: a ticket a
  Redis rollback brought back, ended again with the end the outcome ledger holds, tickets.ts)
  ends it in that state; `succeeded` is never taken from it.
]]
-- @include _lib
local now, seq = tonumber(ARGV[1]), tonumber(ARGV[2])
local record = getRecord(seq)
if not record or string.sub(record, 2) ~= ARGV[4] then return -1 end
if string.sub(record, 1, 1) ~= 'w' or cutFor(loadCuts(), seq) then return -2 end
if rcall('ZSCORE', K.retry, fmt(seq)) and rcall('HGET', keyOf.x(seq), 'noEffect') ~= '1' then return -3 end
local char, status = 'c', 'cancelled'
local ok, said = pcall(cjson.decode, ARGV[3])
if ok and type(said) == 'table' and said.status ~= 'succeeded' then
  for c, st in pairs(stateByChar) do if st == said.status then char, status = c, st end end
end
finish(seq, record, 'waiting', char, status, ARGV[3], now)
rcall('ZREM', K.retry, fmt(seq))
local userId = recordUser(record)
if rcall('HGET', K.users, userId) == fmt(seq) then rcall('HDEL', K.users, userId) end
local n = rcall('HINCRBY', K.ctr, 'cxn', 1)
if (tonumber(rcall('HGET', K.meta, 'lines') or '1') or 1) <= 1 then rcall('XADD', K.cx, '*', 's', fmt(seq), 'n', fmt(n)) end
return 1
