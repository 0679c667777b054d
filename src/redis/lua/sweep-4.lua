--[[
  Gives tickets whose lease ran out back to the head of the line (run by every daemon ~2x/s).
  KEYS[1] meta  KEYS[2] ctr  KEYS[3] leases  KEYS[4] retry
  ARGV[1] base  ARGV[2] now
  Returns the number of leases reclaimed.
]]
-- @include _lib
return reclaimExpired(ARGV[1], KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[2]))
