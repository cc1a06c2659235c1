-- The trusted part of every Lua state: the coroutine driver, the call budget, the sandboxed
-- environment scripts run in, and the Lua side of the modules (http, json, kv, ...).
--
-- It runs once per state, in the state's real global environment and with the full standard
-- library, BEFORE any script code. It captures what it needs (debug.sethook, the real
-- coroutine functions, load) in locals, builds a separate environment table for scripts, then
-- strips the real globals. Script code only ever sees that environment: nothing here is
-- reachable from it except through the functions it is handed.
--
-- Arguments (from Python): H, a table of Python callables (the module implementations), and
-- CFG, the per-state settings. Returns the driver table Python uses.

local H, CFG = ...

-- ------------------------------------------------------------------------------------------
-- Everything the driver needs, captured before the sandbox removes it
-- ------------------------------------------------------------------------------------------

local debug_sethook, debug_traceback, debug_setmetatable, debug_getinfo =
  debug.sethook, debug.traceback, debug.setmetatable, debug.getinfo
local co_create, co_resume, co_yield, co_status, co_running, co_close, co_isyieldable =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.status, coroutine.running,
  coroutine.close, coroutine.isyieldable
local pack, unpack, concat = table.pack, table.unpack, table.concat
local type, error, select, tostring, next, pairs, ipairs, rawget, rawset, rawequal, load, xpcall =
  type, error, select, tostring, next, pairs, ipairs, rawget, rawset, rawequal, load, xpcall
local setmetatable, getmetatable = setmetatable, getmetatable
local string_format, string_find, string_sub = string.format, string.find, string.sub
local math_huge = math.huge

local clock = H.clock

-- Every hook call makes an argument table that is garbage when the call ends: Lua 5.4's
-- generational collector frees such young objects for less work than the incremental one.
-- (The memory limit is the allocator's, whatever the mode.)
collectgarbage("generational")

-- A unique value a coroutine yields to ask the Python driver for an I/O operation. Script
-- code cannot reach it, so it cannot forge requests.
local IO = {}

-- ------------------------------------------------------------------------------------------
-- Call budget: a count hook on every coroutine of a call
-- ------------------------------------------------------------------------------------------

local HOOK_COUNT = CFG.hook_count          -- instructions between two hook calls
local MAX_INSTRUCTIONS = CFG.max_instructions  -- 0 = no instruction limit
local TIME_LIMITED = CFG.time_limited      -- check the clock (Python perf_counter)?
local BUDGET_ON = MAX_INSTRUCTIONS > 0 or TIME_LIMITED
local MAX_UNITS = MAX_INSTRUCTIONS > 0 and (MAX_INSTRUCTIONS // HOOK_COUNT + 1) or math_huge
local TIME_EVERY = 8                       -- clock checks every TIME_EVERY hook calls
local MAX_TIME_S = CFG.max_time_ms / 1000.0 -- Lua time of a hook call (see its deadline)

-- Budget record of the call whose coroutine is running (set by step, nil otherwise). Nested
-- coroutines a script creates share their call's record.
local CURRENT = nil
local BUDGETS = setmetatable({}, { __mode = "k" })   -- root coroutine -> budget record

-- Charge one unit (HOOK_COUNT instructions) to the budget record `b`; true when the budget
-- is used up (then `b.tripped` says how).
local function spend(b)
  if b.tripped then return true end
  local left = b.left - 1
  b.left = left
  if left < 0 then
    b.tripped = string_format("more than %d instructions", MAX_INSTRUCTIONS)
    return true
  end
  if TIME_LIMITED then
    local tick = b.tick + 1
    if tick >= TIME_EVERY then
      b.tick = 0
      local deadline = b.deadline
      if deadline == false then
        -- A hook call's clock starts at its first check (hook_count * TIME_EVERY
        -- instructions in), which spares every short call a clock reading.
        b.deadline = clock() + MAX_TIME_S
      elseif deadline and clock() > deadline then
        b.tripped = string_format("more than %g ms of Lua time", CFG.max_time_ms)
        return true
      end
    else
      b.tick = tick
    end
  end
  return false
end

local hook
hook = function()
  local b = CURRENT
  if b == nil or not spend(b) then return end
  -- From now on every instruction of this coroutine fails, so pcall cannot swallow it.
  debug_sethook(co_running(), hook, "", 1)
  error("call budget exceeded: " .. b.tripped, 2)
end

local function watch(co)
  if BUDGET_ON then debug_sethook(co, hook, "", HOOK_COUNT) end
  return co
end

-- ------------------------------------------------------------------------------------------
-- The script environment and per-call isolation of globals (keep_state = false)
-- ------------------------------------------------------------------------------------------

-- BASE holds the script's globals as its top level left them. ENV is the (always empty)
-- table script code uses as _ENV; its metatable decides where reads and writes go:
--   * during load, and with keep_state: straight to BASE;
--   * otherwise, writes made by a call go to that call's own overlay table (created on the
--     first write), reads see the overlay first, then BASE. So every call starts from the
--     post-load globals, and concurrent calls on one state never see each other's globals.
local BASE = {}
local ENV = {}
local ISOLATE = false
local CUR_CO = nil                                     -- root coroutine being stepped
local OVERLAYS = setmetatable({}, { __mode = "k" })    -- root coroutine -> its ENV metatable
-- ENV's metatable is switched only while a call that has an overlay (it wrote a global) runs.
local ENV_SWITCHED = false
-- The budget record of plain calls (see "Plain calls" below); `on` while one runs, which has
-- no coroutine: PLAIN stands for it in OVERLAYS, and `switched` says it made an overlay.
local PLAIN = {
  left = MAX_UNITS, tick = 0, tripped = false, deadline = false, on = false, switched = false,
}

local function merged_pairs(overlay)
  local in_overlay = overlay ~= nil
  local function iter(_, key)
    if in_overlay then
      local k, v = next(overlay, key)
      if k ~= nil then return k, v end
      in_overlay, key = false, nil
    end
    local k, v = next(BASE, key)
    while k ~= nil and overlay ~= nil and rawget(overlay, k) ~= nil do
      k, v = next(BASE, k)
    end
    return k, v
  end
  return iter, ENV, nil
end

local MT_DIRECT = {
  __index = BASE,
  __newindex = BASE,
  __pairs = function() return merged_pairs(nil) end,
  __metatable = false,
}

local MT_LAZY = {
  __index = BASE,
  __pairs = function() return merged_pairs(nil) end,
  __metatable = false,
}
MT_LAZY.__newindex = function(_, key, value)
  local co = CUR_CO
  if co == nil then
    if not PLAIN.on then   -- loading
      BASE[key] = value
      return
    end
    co = PLAIN
    PLAIN.switched = true
  end
  local overlay = setmetatable({}, { __index = BASE })
  local mt = {
    __index = overlay,
    __newindex = overlay,
    __pairs = function() return merged_pairs(overlay) end,
    __metatable = false,
  }
  OVERLAYS[co] = mt
  debug_setmetatable(ENV, mt)
  ENV_SWITCHED = true
  overlay[key] = value
end

debug_setmetatable(ENV, MT_DIRECT)

local function enter(co)
  CUR_CO = co
  if ISOLATE then
    local mt = OVERLAYS[co]
    if mt ~= nil then
      debug_setmetatable(ENV, mt)
      ENV_SWITCHED = true
    end
  end
end

local function leave()
  CUR_CO, CURRENT = nil, nil
  if ENV_SWITCHED then
    debug_setmetatable(ENV, MT_LAZY)
    ENV_SWITCHED = false
  end
end

-- ------------------------------------------------------------------------------------------
-- Stepping a call's coroutine (the only place coroutines of calls are resumed)
-- ------------------------------------------------------------------------------------------

local function errmsg(e)
  local t = type(e)
  if t == "string" then return e end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(e) end
  return "(error object is a " .. t .. " value)"   -- never run a script's __tostring here
end

-- Calls in progress: id -> root coroutine. Python holds the id (lupa cannot hand Lua
-- threads to Python and back); the entry goes when the call ends or is abandoned.
local CALLS = {}
local NEXT_ID = 0

-- Hook calls run in pooled worker coroutines: a worker runs one call, yields DONE with its
-- result and waits for the next call (creating a coroutine and its budget record per call
-- costs more than the call itself for small hooks). A worker whose call failed is dead, one
-- whose caller went away is abandoned: neither comes back to the pool.
local DONE = {}
local IDLE = {}
local IDLE_COUNT = 0
local MAX_IDLE = 32

local function worker(fn, args)
  while true do
    fn, args = co_yield(DONE, (fn(args)))
  end
end

local function finish(id, co, ok, ...)
  leave()
  if not ok then
    CALLS[id] = nil
    local b = BUDGETS[co]
    local msg = errmsg((...))
    return "error", msg, b and b.tripped or false, debug_traceback(co, nil, 0)
  end
  local first = (...)
  if rawequal(first, DONE) then
    CALLS[id] = nil
    OVERLAYS[co] = nil
    if IDLE_COUNT < MAX_IDLE then
      IDLE_COUNT = IDLE_COUNT + 1
      IDLE[IDLE_COUNT] = co
    end
    return "done", (select(2, ...))
  end
  if co_status(co) == "dead" then
    CALLS[id] = nil
    return "done", first
  end
  if rawequal(first, IO) then
    return "io", select(2, ...)
  end
  CALLS[id] = nil
  return "error", "coroutine.yield called outside a coroutine created by the script", false, ""
end

-- Resume call `id` with the given values; `deadline` is the perf_counter value its Lua time
-- must not pass (nil = none). Returns "done", result | "io", op, args... | "error", msg,
-- tripped, traceback.
local function step(id, deadline, ...)
  local co = CALLS[id]
  if co == nil then
    return "error", "this call was abandoned", false, ""
  end
  local b = BUDGETS[co]
  if b ~= nil then
    b.deadline = deadline
    CURRENT = b
  end
  enter(co)
  return finish(id, co, co_resume(co, ...))
end

local function register(co)
  NEXT_ID = NEXT_ID + 1
  CALLS[NEXT_ID] = co
  return NEXT_ID
end

-- A call running `fn` in a coroutine of its own (a script's main chunk, callbacks).
local function new_call(fn)
  local co = co_create(fn)
  if BUDGET_ON then
    BUDGETS[co] = { left = MAX_UNITS, tick = 0, tripped = false }
    watch(co)
  end
  return register(co)
end


-- ------------------------------------------------------------------------------------------
-- Module helpers
-- ------------------------------------------------------------------------------------------

-- Ask the Python driver for an operation; returns its results or raises its error.
-- Module functions tail-call io and sync (`return io(...)`), so their own frame is gone and
-- level 2 is the script line that called the module function.
local function io(op, ...)
  local r = pack(co_yield(IO, op, ...))
  if r[1] then return unpack(r, 2, r.n) end
  error(r[2], 2)
end

-- Call a synchronous Python implementation returning (ok, value...) (tail-called, as io).
local function sync(fn, ...)
  local r = pack(fn(...))
  if r[1] then return unpack(r, 2, r.n) end
  error(r[2], 2)
end

-- ------------------------------------------------------------------------------------------
-- Sandboxed base functions
-- ------------------------------------------------------------------------------------------

local SCRIPT_COS = setmetatable({}, { __mode = "k" })  -- coroutines created by script code

local function s_create(f)
  if type(f) ~= "function" then
    error("bad argument #1 to 'create' (function expected)", 2)
  end
  local co = watch(co_create(f))
  SCRIPT_COS[co] = true
  return co
end

-- Resume a script coroutine; I/O requests it yields are passed up to the driver and the
-- answers handed back, so module functions work inside script coroutines too.
local function s_resume(co, ...)
  if not SCRIPT_COS[co] then
    return false, "cannot resume a coroutine not created by this script"
  end
  local r = pack(co_resume(co, ...))
  while r[1] and rawequal(r[2], IO) and co_status(co) == "suspended" do
    r = pack(co_resume(co, co_yield(IO, unpack(r, 3, r.n))))
  end
  return unpack(r, 1, r.n)
end

local function s_wrap(f)
  local co = s_create(f)
  return function(...)
    local r = pack(s_resume(co, ...))
    if r[1] then return unpack(r, 2, r.n) end
    error(r[2], 2)
  end
end

local function s_close(co)
  if not SCRIPT_COS[co] then
    error("cannot close a coroutine not created by this script", 2)
  end
  return co_close(co)
end

local function s_setmetatable(t, mt)
  if rawequal(t, ENV) then
    error("cannot change the metatable of the global environment", 2)
  end
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    -- Finalizers run whenever the collector runs, outside any call and its budget.
    error("__gc metamethods are not allowed in scripts", 2)
  end
  return setmetatable(t, mt)
end

local function s_rawget(t, k)
  if rawequal(t, ENV) then return ENV[k] end
  return rawget(t, k)
end

local function s_rawset(t, k, v)
  if rawequal(t, ENV) then
    ENV[k] = v
    return t
  end
  return rawset(t, k, v)
end

local GC_OPTIONS = { collect = true, count = true, step = true, isrunning = true }
local function s_collectgarbage(opt, arg)
  opt = opt or "collect"
  if not GC_OPTIONS[opt] then
    error("collectgarbage('" .. tostring(opt) .. "') is not allowed in scripts", 2)
  end
  return collectgarbage(opt, arg)
end

-- load: text chunks only, in the script environment unless an env is given.
local function s_load(chunk, chunkname, mode, ...)
  if mode ~= nil and (type(mode) ~= "string" or not mode:find("t", 1, true)) then
    return nil, "attempt to load a binary chunk (only text chunks are allowed)"
  end
  local env = ENV
  if select("#", ...) > 0 then env = (...) end
  return load(chunk, chunkname, "t", env)
end

local function s_loadfile(filename, mode, ...)
  if mode ~= nil and (type(mode) ~= "string" or not mode:find("t", 1, true)) then
    return nil, "attempt to load a binary chunk (only text chunks are allowed)"
  end
  if type(filename) ~= "string" then
    return nil, "loadfile: a file name is required (no standard input in scripts)"
  end
  local r = pack(co_yield(IO, "read_file", filename))
  if not r[1] then return nil, r[2] end
  local env = ENV
  if select("#", ...) > 0 then env = (...) end
  return load(r[2], "@" .. r[3], "t", env)
end

local function s_dofile(filename)
  local chunk, err = s_loadfile(filename)
  if not chunk then error(err, 2) end
  return chunk()
end

local PACKAGE = {
  path = CFG.package_path,
  cpath = "",
  config = package.config,
  loaded = {},
  preload = {},
}

local function s_require(name)
  if type(name) ~= "string" then
    error("bad argument #1 to 'require' (string expected, got " .. type(name) .. ")", 2)
  end
  local loaded = PACKAGE.loaded
  local value = loaded[name]
  if value ~= nil then return value end
  local preload = PACKAGE.preload[name]
  if preload ~= nil then
    value = preload(name, ":preload:")
    if value == nil then value = true end
    if loaded[name] == nil then loaded[name] = value end
    return loaded[name], ":preload:"
  end
  local path = PACKAGE.path
  if type(path) ~= "string" then error("'package.path' must be a string", 2) end
  local r = pack(co_yield(IO, "require", name, path))
  if not r[1] then error(r[2], 2) end
  local chunk, err = load(r[2], "@" .. r[3], "t", ENV)
  if not chunk then
    error("error loading module '" .. name .. "' from file '" .. r[3] .. "':\n\t" .. err, 2)
  end
  value = chunk(name, r[3])
  if value ~= nil then loaded[name] = value end
  if loaded[name] == nil then loaded[name] = true end
  return loaded[name], r[3]
end

local function s_print(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = tostring((select(i, ...))) end
  H.log("info", concat(parts, "\t"))
end

-- ------------------------------------------------------------------------------------------
-- Modules
-- ------------------------------------------------------------------------------------------

local function stringify(v, what)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return tostring(v) end
  error("bad argument #1 to '" .. what .. "' (string expected, got " .. t .. ")", 3)
end

local log = {}
for _, level in ipairs({ "debug", "info", "warning", "error" }) do
  log[level] = function(msg)
    H.log(level, stringify(msg, "log." .. level))
    return true
  end
end
log.warn = log.warning

local json = {
  encode = function(value) return sync(H.json_encode, value) end,
  decode = function(text) return sync(H.json_decode, text) end,
}

local kv = {
  ensure_table = function(opts) return sync(H.kv, "ensure_table", opts) end,
  insert = function(name, objects) return sync(H.kv, "insert", name, objects) end,
  insert_new = function(name, objects) return sync(H.kv, "insert_new", name, objects) end,
  lookup = function(name, key) return sync(H.kv, "lookup", name, key) end,
  delete = function(name, key) return sync(H.kv, "delete", name, key) end,
  delete_all = function(name) return sync(H.kv, "delete_all", name) end,
}

local crypto = {
  hash = function(alg, data) return sync(H.crypto_hash, alg, data) end,
}

local obf = {
  encrypt = function(s) return sync(H.obf, "encrypt", s) end,
  decrypt = function(s) return sync(H.obf, "decrypt", s) end,
}

local bcrypt = {
  gen_salt = function(rounds) return sync(H.bcrypt_gen_salt, rounds) end,
  hashpw = function(password, salt) return io("bcrypt_hashpw", password, salt) end,
}

local auth_cache = {
  insert = function(mountpoint, client_id, username, publish_acl, subscribe_acl)
    return sync(H.cache, "insert", mountpoint, client_id, username, publish_acl, subscribe_acl)
  end,
  match_publish = function(mountpoint, client_id, topic, qos, payload, retain)
    return sync(H.cache, "match_publish", mountpoint, client_id, topic, qos, payload, retain)
  end,
  match_subscribe = function(mountpoint, client_id, topic, qos)
    return sync(H.cache, "match_subscribe", mountpoint, client_id, topic, qos)
  end,
}

local vmq_api = {
  disconnect_by_subscriber_id = function(subscriber_id, opts)
    return io("disconnect_by_subscriber_id", subscriber_id, opts)
  end,
  reauthorize_subscriptions = function(username, subscriber_id, opts)
    return io("reauthorize_subscriptions", username, subscriber_id, opts)
  end,
}

-- http: the pool options are checked in Python; on_tls_error stays here, in Lua, and runs
-- inside the calling coroutine (so it may log, use kv ... and counts against the budget).
local TLS_CALLBACKS = {}
local http = {}

function http.ensure_pool(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'http.ensure_pool' (table of options expected, got "
      .. type(opts) .. ")", 2)
  end
  local callback = rawget(opts, "on_tls_error")
  if callback ~= nil and type(callback) ~= "function" then
    error("http.ensure_pool: on_tls_error must be a function, got " .. type(callback), 2)
  end
  local options = {}
  for key, value in next, opts do
    if key ~= "on_tls_error" then options[key] = value end
  end
  local r = pack(co_yield(IO, "http_ensure_pool", options))
  if not r[1] then error(r[2], 2) end
  TLS_CALLBACKS[r[2]] = callback
  return true
end

local function response(status, headers, body)
  return { status = status, headers = headers, ref = body, body = body }
end

local function request(method, pool_id, url, body, headers)
  local r = pack(co_yield(IO, "http_request", method, pool_id, url, body, headers, false))
  if not r[1] then error(r[2], 3) end
  if r[2] then return response(r[2], r[3], r[4]) end
  local tls_error = r[5]
  if tls_error then
    local callback = TLS_CALLBACKS[pool_id or "pool_http"]
    if callback ~= nil
      and callback({ pool_id = pool_id or "pool_http", url = url, error = tls_error }) == true then
      r = pack(co_yield(IO, "http_request", method, pool_id, url, body, headers, true))
      if not r[1] then error(r[2], 3) end
      if r[2] then return response(r[2], r[3], r[4]) end
    end
  end
  return false
end

for _, method in ipairs({ "get", "post", "put", "delete", "patch", "head" }) do
  local verb = method:upper()
  http[method] = function(pool_id, url, body, headers)
    local r = request(verb, pool_id, url, body, headers)
    return r
  end
end

function http.body(ref)
  -- The body is read with the response (no connection is held back); kept for scripts
  -- written for VerneMQ, where it had to be fetched separately.
  if type(ref) == "table" then return ref.ref end
  return ref
end

-- ------------------------------------------------------------------------------------------
-- The script environment
-- ------------------------------------------------------------------------------------------

for _, name in ipairs({
  "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring",
  "type", "xpcall", "rawequal", "rawlen", "getmetatable", "_VERSION",
}) do
  BASE[name] = _G[name]
end
string.dump = nil   -- also reachable as ("").dump through the string metatable
BASE.string = string
BASE.table = table
BASE.math = math
BASE.utf8 = utf8
BASE.os = { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime }
BASE.coroutine = {
  create = s_create, resume = s_resume, wrap = s_wrap, yield = co_yield, status = co_status,
  running = co_running, isyieldable = co_isyieldable, close = s_close,
}
BASE.setmetatable = s_setmetatable
BASE.rawget = s_rawget
BASE.rawset = s_rawset
BASE.collectgarbage = s_collectgarbage
BASE.load = s_load
BASE.loadfile = s_loadfile
BASE.dofile = s_dofile
BASE.require = s_require
BASE.print = s_print
BASE.package = PACKAGE
BASE._G = ENV
BASE.__SCRIPT_INSTANCE_ID__ = CFG.instance_id

local MODULES = {
  http = http, json = json, kv = kv, log = log, bcrypt = bcrypt, crypto = crypto, obf = obf,
  auth_cache = auth_cache, vmq_api = vmq_api,
}
for name, module in pairs(MODULES) do BASE[name] = module end
for _, name in ipairs({ "string", "table", "math", "utf8", "os", "coroutine" }) do
  PACKAGE.loaded[name] = BASE[name]
end
for name, module in pairs(MODULES) do PACKAGE.loaded[name] = module end
PACKAGE.loaded._G = ENV

-- Strip the real globals too (defence in depth: scripts never see them anyway).
for _, name in ipairs({ "io", "debug", "python", "dofile", "loadfile", "require", "load" }) do
  _G[name] = nil
  package.loaded[name] = nil
end
os.execute, os.exit, os.remove, os.rename, os.tmpname, os.getenv, os.setlocale =
  nil, nil, nil, nil, nil, nil, nil
package.loadlib, package.searchers, package.cpath = nil, {}, ""

-- ------------------------------------------------------------------------------------------
-- The driver table (for Python only)
-- ------------------------------------------------------------------------------------------

local HOOKS = {}   -- hook name -> the script's function (filled by driver.loaded)

local driver = {}

-- Hook calls (the per-message path). Python calls the hook's entry function (see
-- driver.entry) with the argument values; that is the only crossing from Python to Lua per
-- call, and a call that finishes without waiting for I/O crosses back with ONE value, its
-- result. The work per call is kept to what the guarantees need:
--   * the hook runs in a pooled worker coroutine (so that a module function can yield for
--     I/O at any point), which is a resume and a yield, no coroutine creation;
--   * the budget record of that coroutine is reset (three field writes): the count hook was
--     set once when the worker was created, and the time budget's clock is read lazily;
--   * nothing is registered, and the overlay of globals is only dropped if the call made one.
local hook_done

local function run(fn, args)
  local co
  local n = IDLE_COUNT
  if n > 0 then
    co = IDLE[n]
    IDLE[n] = nil
    IDLE_COUNT = n - 1
  else
    co = co_create(worker)
    if BUDGET_ON then
      BUDGETS[co] = { left = MAX_UNITS, tick = 0, tripped = false, deadline = false }
      watch(co)
    end
  end
  local b = BUDGETS[co]
  if b ~= nil then
    b.left, b.tick, b.deadline = MAX_UNITS, 0, false  -- false: set at the first time check
    CURRENT = b
  end
  CUR_CO = co   -- a new call has no overlay of globals yet (enter() would find none)
  return hook_done(co, co_resume(co, fn, args))
end

-- `tag` is what the worker yielded first: DONE (the call finished, `result` is its result),
-- or IO (a request for Python), or, with ok false, the error.
hook_done = function(co, ok, tag, result, ...)
  if ok and rawequal(tag, DONE) then
    CUR_CO, CURRENT = nil, nil
    if ENV_SWITCHED then
      -- The call assigned a global (keep_state off): forget its overlay.
      OVERLAYS[co] = nil
      debug_setmetatable(ENV, MT_LAZY)
      ENV_SWITCHED = false
    end
    if IDLE_COUNT < MAX_IDLE then
      IDLE_COUNT = IDLE_COUNT + 1
      IDLE[IDLE_COUNT] = co
    end
    return result
  end
  -- Waiting for I/O, or failed: register the call so that Python can step or forget it, and
  -- return several values (the call id, then step's results).
  local id = register(co)
  return id, finish(id, co, ok, tag, result, ...)
end

-- Plain calls: the hooks of a script that cannot yield (Python decides it from the script's
-- source, see plugin_host_diversity/yields.py: it names no module or function that yields)
-- run on the calling thread under xpcall, without a worker coroutine (see driver.entry).
-- What a call guarantees stays the same:
--   * budget: the main thread has its own count hook (main_hook, set once at the end of this
--     file) charging PLAIN, the budget record of plain calls, while one runs (PLAIN.on); once
--     tripped every instruction of the script fails (as on a coroutine), and the hook is put
--     back after the call;
--   * globals: with keep_state off a call's writes go to an overlay (see MT_LAZY; only one
--     plain call runs at a time: it never waits), dropped when the call ends;
--   * errors: the same message, tripped flag and traceback as a failed coroutine call.
local PLAIN_TRACE = nil      -- the traceback plain_handler took of the failed call
-- The driver's functions that main_hook lets run after the budget tripped (they end the
-- call); the plain entries are added by driver.entry.
local DRIVER = setmetatable({}, { __mode = "k" })
local main_hook

local function plain_handler(e)
  -- Level 2: the function that raised the error (as level 0 of a dead coroutine).
  PLAIN_TRACE = debug_traceback(nil, 2)
  return e
end

-- The end of a plain call that failed or assigned a global (the entry returns at once
-- otherwise).
local function plain_done(ok, result)
  local b = PLAIN
  b.on = false
  if b.switched then
    -- The call assigned a global (keep_state off): forget its overlay.
    b.switched = false
    OVERLAYS[b] = nil
    debug_setmetatable(ENV, MT_LAZY)
    ENV_SWITCHED = false
  end
  if ok then return result end
  -- Failed: the same values as a failed coroutine call (see hook_done), with no call id.
  local tripped = b.tripped
  if tripped then
    b.tripped = false
    debug_sethook(main_hook, "", HOOK_COUNT)
  end
  local trace = PLAIN_TRACE or ""   -- none for memory errors (Lua calls no handler for them)
  PLAIN_TRACE = nil
  -- Like a coroutine's, the traceback stops at the driver: cut at (the last) xpcall.
  local cut, at = nil, 0
  repeat
    at = string_find(trace, "\n\t[C]: in function 'xpcall'", at + 1, true)
    if at then cut = at end
  until not at
  if cut then trace = string_sub(trace, 1, cut - 1) end
  return 0, "error", errmsg(result), tripped, trace
end

DRIVER[plain_handler], DRIVER[plain_done] = true, true

main_hook = function()
  local b = PLAIN
  if not b.on or not spend(b) then return end
  -- Tripped. The driver's own functions still run (they end the call); everything else, the
  -- script's code and its pcall handlers included, fails at every instruction.
  if DRIVER[debug_getinfo(2, "f").func] then return end
  debug_sethook(main_hook, "", 1)
  error("call budget exceeded: " .. b.tripped, 2)
end

-- The entry function of a hook: `function(v1, ..., vn)` building the argument table
-- `{name1 = v1, ..., namen = vn}` (nil values leave their key out) and running the hook
-- with it. Compiled once per state and hook: a table constructor with the names inlined
-- costs a fraction of filling a table in a loop, and the hook's function is looked up at
-- call time (HOOKS is filled by driver.loaded, after the entry may have been made). `plain`:
-- the script cannot yield, its calls run without a coroutine (see PLAIN).
function driver.entry(keys, hook, plain)
  local params, fields = {}, {}
  for i = 1, #keys do
    local name = keys[i]
    if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
      error("bad argument name " .. tostring(name))
    end
    params[i] = "v" .. i
    fields[i] = name .. " = v" .. i
  end
  params, fields = concat(params, ", "), concat(fields, ", ")
  if not plain then
    local source = "local run, HOOKS, hook = ...\nreturn function(" .. params
      .. ") return run(HOOKS[hook], {" .. fields .. "}) end"
    return load(source, "=entry", "t", {})(run, HOOKS, hook)
  end
  -- The plain call inlined (see PLAIN): the common case, a call that finishes and assigned
  -- no global, costs no Lua function call besides the hook's own.
  local source = "local HOOKS, hook, P, MAX_UNITS, xpcall, handler, done = ...\n"
    .. "return function(" .. params .. ")\n"
    .. "  local args = {" .. fields .. "}\n"
    .. "  P.left, P.tick, P.deadline, P.on = MAX_UNITS, 0, false, true\n"
    .. "  local ok, result = xpcall(HOOKS[hook], handler, args)\n"
    .. "  if ok and not P.switched then P.on = false return result end\n"
    .. "  return done(ok, result)\n"
    .. "end"
  local entry = load(source, "=entry", "t", {})(
    HOOKS, hook, PLAIN, MAX_UNITS, xpcall, plain_handler, plain_done)
  DRIVER[entry] = true
  return entry
end

-- Compile a script's main chunk; returns its call id, or nil and the syntax error.
function driver.compile(source, chunkname)
  local chunk, err = load(source, chunkname, "t", ENV)
  if not chunk then return nil, err end
  return new_call(chunk), nil
end

-- After the main chunk ran: take the hooks table, num_states and keep_state.
function driver.loaded()
  local names = {}
  for key in next, HOOKS do HOOKS[key] = nil end   -- in place: entries hold HOOKS
  local hooks = rawget(BASE, "hooks")
  if type(hooks) == "table" then
    for key, fn in next, hooks do
      if type(key) == "string" and type(fn) == "function" then
        HOOKS[key] = fn
        names[#names + 1] = key
      end
    end
  end
  return names, rawget(BASE, "num_states"), rawget(BASE, "keep_state"), type(hooks)
end

-- keep_state = false: isolate each call's global writes (see ENV above).
function driver.isolate(on)
  ISOLATE = on and true or false
  debug_setmetatable(ENV, ISOLATE and MT_LAZY or MT_DIRECT)
end

driver.step = step

-- Forget a call that will not be resumed (its caller was cancelled).
function driver.abandon(id)
  CALLS[id] = nil
end

-- Call an arbitrary Lua function of this state inside a call (used for tests).
function driver.call_function(fn, deadline, ...)
  local id = new_call(fn)
  return id, step(id, deadline, ...)
end

function driver.global(name)
  return rawget(BASE, name)
end

-- The main thread's budget hook (plain calls). Coroutines get theirs from watch().
if BUDGET_ON then debug_sethook(main_hook, "", HOOK_COUNT) end

-- The driver uses locals only: a global assignment from now on is a bug in this file.
setmetatable(_G, {
  __newindex = function(_, key) error("prelude bug: assignment to global " .. tostring(key), 2) end,
})

return driver
