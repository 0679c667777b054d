--[[
  Gives tickets whose lease ran out back to the head of the line (run by every daemon ~2x/s).
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] retry  KEYS[4] leases  KEYS[5] payloads  KEYS[6] stock
  KEYS[7] taken  KEYS[8] done  KEYS[9] doubt
  ARGV[1] now (ms, the caller's clock)
  Returns the number of leases reclaimed.
]]
-- @include _lib
return reclaimExpired(tonumber(ARGV[1]))
