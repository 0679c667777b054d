--[[
  Writes the business outcome of an admitted ticket under its lease.
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] retry  KEYS[4] leases
  ARGV[1] base  ARGV[2] seq  ARGV[3] now  ARGV[4] leaseId
  ARGV[5] status (succeeded|rejected|failed)  ARGV[6] outcome JSON  ARGV[7] retry ('1' returns
  the ticket to the head instead of ending it; only with failed)
  ARGV[8] '1' = owner override: settle an admitted ticket whatever its current lease (used only by
  in-process workers, whose effects are idempotent; never reachable through the API)
  Returns code: 1 applied, 2 already applied with this lease (idempotent repeat),
    -1 ticket not found, -2 lease lost (expired, superseded, or a different outcome already written)
  A lease that has expired but not yet been reclaimed is reclaimed here and answered lease_lost.
]]
-- @include _lib
local base, seq, now, leaseId, status, outcome, retry = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7] == '1'
local record = getRecord(base, seq)
if not record then return -1 end
local xKey = base .. 'x:' .. fmt(seq)
local x = rcall('HMGET', xKey, 'lease', 'leaseExp', 'lastLease', 'lastStatus')
local asked = status
if retry then asked = 'retry' end
local st = string.sub(record, 1, 1)

if st ~= 'a' then
  if x[3] == leaseId and x[4] == asked then return 2 end
  return -2
end
if x[1] ~= leaseId and ARGV[8] ~= '1' then return -2 end
leaseId = x[1]
rcall('ZREM', KEYS[4], fmt(seq))
if tonumber(x[2]) < now then
  returnToHead(base, KEYS[1], KEYS[2], KEYS[3], seq, record, now)
  return -2
end
rcall('HSET', xKey, 'lastLease', leaseId, 'lastStatus', asked)
if retry then
  returnToHead(base, KEYS[1], KEYS[2], KEYS[3], seq, record, now)
  return 1
end
local chars = { succeeded = 's', rejected = 'r', failed = 'f' }
finish(base, KEYS[2], seq, record, 'admitted', chars[status], status, outcome, now)
rcall('HDEL', xKey, 'lease', 'leaseExp')
return 1
