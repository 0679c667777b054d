--[[
  Blocks or unblocks a user for one item's line.
  KEYS[1] blocked (hash userId -> bits: 1 blocked for this item, 2 blocked everywhere)
  ARGV[1] userId  ARGV[2] bit (1|2)  ARGV[3] '1' set, '0' clear
  Returns the user's bits after the change.
]]
local bits = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local bit = tonumber(ARGV[2])
local has = math.floor(bits / bit) % 2 == 1
if ARGV[3] == '1' and not has then bits = bits + bit end
if ARGV[3] == '0' and has then bits = bits - bit end
if bits == 0 then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], bits) end
return bits
