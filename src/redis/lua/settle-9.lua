--[[
  Writes the business outcomes of admitted tickets of one item under their leases: one call
  settles a whole batch (an in-process job), or one ticket (the API's writeback).
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] retry  KEYS[4] leases  KEYS[5] payloads  KEYS[6] stock
  KEYS[7] taken  KEYS[8] done  KEYS[9] doubt
  ARGV[1] now (ms, the caller's clock)
  ARGV[2..] per ticket seven values:
    seq, leaseId, status (succeeded|rejected|failed; cancelled|expired only to end again a ticket
    whose end the outcome ledger holds: admissions.dropHeldEnds), outcome JSON,
    retry ('1' returns the ticket to the head instead of ending it; only with failed; unforced, it
    says the run had no effect: on a cut item the ticket ends with the cut's outcome at once,
    returnToHead in _lib),
    force ('1' = owner override: settle an admitted ticket whatever its current lease, also one
    whose lease ran out or that waits in doubt (the job that ran it knows its outcome); used only
    by in-process workers, whose effects are idempotent; never reachable through the API; a failed
    or retry is refused (-2) while another lease of the ticket is live: that run will tell),
    record (the ticket's record without its state char, as the settler knows it; '' = not checked):
    a record that differs is another ticket at the same seq — after a Redis rollback the seq of a
    lost join is taken by the next one — and is not this settle's (-1), forced or not
  Returns one code per ticket: 1 applied, 2 already applied with this lease (idempotent repeat),
    -1 ticket not found, -2 lease lost (expired or superseded), -3 a different outcome was already
    written under this lease
  A lease that has expired but not yet been reclaimed is reclaimed here and answered lease_lost
  (unless forced, or the ticket waits in doubt: then its outcome is what it waited for).
]]
-- @include _lib
local now = tonumber(ARGV[1])
local chars = { succeeded = 's', rejected = 'r', failed = 'f', cancelled = 'c', expired = 'e' }

local function settleOne(seq, leaseId, status, outcome, retry, force, tail)
  local record = getRecord(seq)
  if not record then return -1 end
  if tail and tail ~= '' and string.sub(record, 2) ~= tail then return -1 end
  local xKey = keyOf.x(seq)
  local x = rcall('HMGET', xKey, 'lease', 'leaseExp', 'lastLease', 'lastStatus', 'outcome')
  local asked = status
  if retry then asked = 'retry' end
  if string.sub(record, 1, 1) ~= 'a' then
    if x[3] == leaseId then
      -- The same outcome again is a repeat; the same status with another result or reason is
      -- another outcome (it was answered 200 and dropped: a worker was told its second answer
      -- was taken). A retry stores no outcome: its status says it all.
      if x[4] == asked and (retry or x[5] == outcome) then return 2 end
      return -3
    end
    return -2
  end
  if x[1] ~= leaseId and not force then return -2 end
  -- Forced by a run whose lease another run's has replaced, and that one still live (the ticket
  -- was given out again after this run's lease ran out, or run again out of doubt): only an answer
  -- that says what happened stands over it. A drop (`failed` after its attempts: a timeout, a
  -- lost connection) or a retry says nothing the live run will not say better; taken, it ended
  -- the ticket `failed` while the live run's webhook call succeeded, whose settle was refused.
  if force and x[1] and x[1] ~= leaseId and tonumber(x[2] or '0') >= now and (retry or status == 'failed') then return -2 end
  leaseId = x[1] or leaseId
  rcall('ZREM', K.leases, fmt(seq))
  -- A ticket in doubt (holdInDoubt in _lib) waits for its outcome: the holder of its last lease
  -- brings it, however late; so does one of a cut item whose lease ran out a moment ago, which
  -- the sweep would put in doubt.
  if not leaveDoubt(seq) and not force and tonumber(x[2]) < now and not cutFor(loadCuts(), seq) then
    returnToHead(seq, record, now)
    return -2
  end
  rcall('HSET', xKey, 'lastLease', leaseId, 'lastStatus', asked)
  if retry then
    -- A retry written by the lease's holder itself (an outside worker, not forced) says its run
    -- had no effect: on a cut item it ends at once, and at the head its user may cancel it. One
    -- forced by an in-process job says nothing of the kind (Postgres unreachable may be a
    -- connection lost after the commit was sent): the ticket waits as any returned one.
    returnToHead(seq, record, now, not force)
    return 1
  end
  finish(seq, record, 'admitted', chars[status], status, outcome, now)
  rcall('HDEL', xKey, 'lease', 'leaseExp')
  return 1
end

local codes = {}
for i = 2, #ARGV, 7 do
  codes[#codes + 1] = settleOne(tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4] == '1', ARGV[i + 5] == '1', ARGV[i + 6])
end
return codes
