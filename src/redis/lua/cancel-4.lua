--[[
  A user leaves the line. Only a waiting ticket can be cancelled.
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] users  KEYS[4] retry
  ARGV[1] base  ARGV[2] seq  ARGV[3] now  ARGV[4] outcome JSON
  ARGV[5] the record the caller verified the ticket id against, without its state char (a
    record that differs is another ticket at the same seq, e.g. after a Redis rollback: not found)
  Returns 1 cancelled, -1 not found, -2 not cancellable.
  Each cancel of a ticket still in the line is appended to the stream `cx`, so daemons that answer
  polls from their cache learn of it within their refresh period.
]]
-- @include _lib
local base, seq, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local record = getRecord(base, seq)
if not record or string.sub(record, 2) ~= ARGV[5] then return -1 end
if string.sub(record, 1, 1) ~= 'w' or cutFor(loadCuts(KEYS[1]), seq) then return -2 end
finish(base, KEYS[2], seq, record, 'waiting', 'c', 'cancelled', ARGV[4], now)
rcall('ZREM', KEYS[4], fmt(seq))
local userId = recordUser(record)
if rcall('HGET', KEYS[3], userId) == fmt(seq) then rcall('HDEL', KEYS[3], userId) end
rcall('XADD', base .. 'cx', 'MAXLEN', '~', 100000, '*', 's', fmt(seq))
rcall('HINCRBY', KEYS[2], 'cxn', 1)
return 1
