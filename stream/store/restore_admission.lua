-- Write one admission rebuilt from the store changelog into an empty slot (RedisRiskStore.restore_admissions).
-- KEYS: the admission hash, the notes hash, the maxima sorted set (as in apply_note.lua).
-- ARGV: subject_id, sum (exact limbs, computed in Python), n_chunks, n_notes, idle_ttl_ms,
--       then groups of three: note_id, notes-hash record, maximum ('' = no chunk).
-- Returns 0 without writing when the admission is held (the caller merges note by note), else 1.
-- seq starts at 0: the admission events and the seq floor follow in their own scripts.
local A, N, M = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', A) == 1 or redis.call('EXISTS', N) == 1 then return 0 end
local records, maxima = {}, {}
for i = 6, #ARGV, 3 do
  records[#records + 1] = ARGV[i]
  records[#records + 1] = ARGV[i + 1]
  if ARGV[i + 2] ~= '' then
    maxima[#maxima + 1] = ARGV[i + 2]
    maxima[#maxima + 1] = ARGV[i]
  end
end
if #records > 0 then redis.call('HSET', N, unpack(records)) end
if #maxima > 0 then redis.call('ZADD', M, unpack(maxima)) end
if tonumber(ARGV[4]) > 0 then
  redis.call('HSET', A, 'subject_id', ARGV[1], 'sum', ARGV[2], 'n_chunks', ARGV[3], 'n_notes', ARGV[4], 'seq', 0)
end
for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, ARGV[5]) end
return 1
