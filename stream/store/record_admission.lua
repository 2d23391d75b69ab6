-- Record an admit or a discharge (RedisRiskStore.record_admission), atomically.
-- KEYS: the admission hash, the notes hash, the maxima sorted set (as in apply_note.lua); KEYS[4]
--       (optional) the store epoch key, checked by the prefix of redis_store.py (EPOCH_CHECK).
-- ARGV: kind, subject_id, admit_time, discharge_time, admission_type, death_time ('' = none),
--       now_ms, idle_ttl_ms, retention_ms.
-- A first discharge raises seq by one and makes every key expire retention_ms after now.
-- Returns {applied, subject_id, admit_time, discharge_time, admission_type, death_time, discharged}.
local A = KEYS[1]
local kind, subject = ARGV[1], ARGV[2]
local now, idle, retention = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local applied = 0

redis.call('HSETNX', A, 'subject_id', subject)
redis.call('HSETNX', A, 'seq', 0)
if kind == 'admit' then
  if redis.call('HGET', A, 'admit_time') ~= ARGV[3] then
    redis.call('HSET', A, 'admit_time', ARGV[3])
    applied = 1
  end
  if ARGV[5] ~= '' then redis.call('HSET', A, 'admission_type', ARGV[5]) end
else
  if ARGV[3] ~= '' then redis.call('HSETNX', A, 'admit_time', ARGV[3]) end
  if ARGV[4] ~= '' then redis.call('HSET', A, 'discharge_time', ARGV[4]) end
  if ARGV[6] ~= '' then redis.call('HSET', A, 'death_time', ARGV[6]) end
  if redis.call('HGET', A, 'discharged') ~= '1' then
    redis.call('HSET', A, 'discharged', '1', 'expire_at', string.format('%.0f', now + retention))
    redis.call('HINCRBY', A, 'seq', 1)
    applied = 1
  end
end

local s = redis.call('HMGET', A, 'subject_id', 'admit_time', 'discharge_time', 'admission_type',
                     'death_time', 'discharged')
local at = redis.call('HGET', A, 'expire_at')
for _, k in ipairs({KEYS[1], KEYS[2], KEYS[3]}) do
  if at then redis.call('PEXPIREAT', k, at) else redis.call('PEXPIRE', k, idle) end
end
return {applied, s[1] or '', s[2] or '', s[3] or '', s[4] or '', s[5] or '', s[6] or ''}
