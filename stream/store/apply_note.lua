-- Apply one note to one admission, atomically (RedisRiskStore.apply_note).
-- KEYS[1] admission hash: subject_id, seq, sum (exact limbs), n_chunks, n_notes, discharged, expire_at, ...
-- KEYS[2] notes hash: note_id -> "revision|is_error|top_chunk|p1,p2,...|sha256" (probabilities and the
--         content hash only, never text; records written before the hash existed end at the probabilities)
-- KEYS[3] sorted set: note_id -> the note's largest chunk probability (live notes with chunks)
-- KEYS[4] (optional) the store epoch key: checked first by the prefix of redis_store.py (EPOCH_CHECK)
-- ARGV: subject_id, note_id, revision (decimal digits, no leading zero), is_error (0/1), idle_ttl_ms,
--       probabilities (comma-separated), content hash ('' = unknown), 'quiet' (optional: reply applied only)
-- Revisions are compared as decimal strings (length, then digits): exact at any size, where Lua
-- numbers (doubles) would round revisions above 2^53.
-- The sum is exact: integer limbs of 24 bits, in units of 2^-1200, rounded to a float in Python.
-- Returns {applied, reason, subject_id, sum, n_chunks, n_notes, seq, discharged, top_note, top_max, top_chunk}.
local A, N, M = KEYS[1], KEYS[2], KEYS[3]
local subject, note = ARGV[1], ARGV[2]
local rev, err, idle, csv, digest = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7] or ''
local B, OFF = 16777216, 1200

local function limbs_parse(s)
  local t = {}
  if s then
    for i, v in string.gmatch(s, '(%-?%d+):(%-?%d+)') do t[tonumber(i)] = tonumber(v) end
  end
  return t
end

local function limbs_add(t, p, sign)
  if p == 0 then return end
  local m, e = math.frexp(p)
  local mant = m * 9007199254740992 -- 2^53: an integer below 2^53
  local pos = e - 53 + OFF
  local i = math.floor(pos / 24)
  local sh = 2 ^ (pos - i * 24)
  for j = 0, 2 do
    local a = mant % B
    mant = (mant - a) / B
    if a ~= 0 then
      local v = a * sh
      local lo = v % B
      t[i + j] = (t[i + j] or 0) + sign * lo
      t[i + j + 1] = (t[i + j + 1] or 0) + sign * ((v - lo) / B)
    end
  end
end

local function limbs_dump(t)
  local lo, hi
  for k in pairs(t) do
    if not lo or k < lo then lo = k end
    if not hi or k > hi then hi = k end
  end
  if not lo then return '' end
  local out, carry, k = {}, 0, lo
  while k <= hi or (carry ~= 0 and carry ~= -1) do
    local v = (t[k] or 0) + carry
    local d = v % B
    carry = (v - d) / B
    if d ~= 0 then out[#out + 1] = string.format('%d:%.0f', k, d) end
    k = k + 1
  end
  if carry == -1 then out[#out + 1] = string.format('%d:-1', k) end
  return table.concat(out, ',')
end

local function touch()
  local at = redis.call('HGET', A, 'expire_at')
  for _, k in ipairs({A, N, M}) do
    if at then redis.call('PEXPIREAT', k, at) else redis.call('PEXPIRE', k, idle) end
  end
end

local function reply(applied, reason)
  touch()
  if ARGV[8] == 'quiet' then return applied end -- a changelog rebuild reads no state
  local s = redis.call('HMGET', A, 'subject_id', 'sum', 'n_chunks', 'n_notes', 'seq', 'discharged')
  local top = redis.call('ZREVRANGE', M, 0, 0, 'WITHSCORES')
  local top_note, top_max, top_chunk = '', '', ''
  if #top > 0 then
    top_note, top_max = top[1], top[2]
    top_chunk = string.match(redis.call('HGET', N, top_note), '^%d+|%d|(%d+)|')
  end
  return {applied, reason, s[1] or '', s[2] or '', s[3] or '', s[4] or '', s[5] or '', s[6] or '',
          top_note, top_max, top_chunk}
end

local function rev_cmp(a, b) -- -1, 0, 1 for decimal strings without leading zeros
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

local rec = redis.call('HGET', N, note)
local oerr, ocsv = 0, ''
if rec then
  local r, e, c, h = string.match(rec, '^(%d+)|(%d)|%d+|([^|]*)|?(%x*)$')
  oerr, ocsv = tonumber(e), c
  local order = rev_cmp(rev, r)
  if order < 0 or (order == 0 and err <= oerr) then
    if order == 0 and err == oerr then
      if err == 0 and digest ~= '' and h ~= '' and digest ~= h then return reply(0, 'conflict') end
      return reply(0, 'duplicate')
    end
    return reply(0, 'stale')
  end
end

local limbs = limbs_parse(redis.call('HGET', A, 'sum'))
local n_chunks = tonumber(redis.call('HGET', A, 'n_chunks') or '0')
local n_notes = tonumber(redis.call('HGET', A, 'n_notes') or '0')
local live_old = rec and oerr == 0
if live_old then
  for p in string.gmatch(ocsv, '[^,]+') do
    limbs_add(limbs, tonumber(p), -1)
    n_chunks = n_chunks - 1
  end
  n_notes = n_notes - 1
  redis.call('ZREM', M, note)
end

local reason
if err == 1 then
  redis.call('HSET', N, note, rev .. '|1|0||')
  if not live_old then return reply(0, 'retracted') end
  reason = 'retracted'
else
  local best, top, i = -1, 0, 0
  for p in string.gmatch(csv, '[^,]+') do
    local x = tonumber(p)
    limbs_add(limbs, x, 1)
    if x > best then best, top = x, i end
    i = i + 1
  end
  n_chunks = n_chunks + i
  n_notes = n_notes + 1
  if i > 0 then redis.call('ZADD', M, string.format('%.17g', best), note) end
  redis.call('HSET', N, note, rev .. '|0|' .. top .. '|' .. csv .. '|' .. digest)
  if rec then reason = 'revision' else reason = 'new' end
end

redis.call('HINCRBY', A, 'seq', 1)
redis.call('HSET', A, 'sum', limbs_dump(limbs), 'n_chunks', n_chunks, 'n_notes', n_notes)
redis.call('HSETNX', A, 'subject_id', subject)
return reply(1, reason)
