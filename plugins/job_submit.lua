--[[
adsched job_submit plugin for Slurm (22.05+).

Pure lua over adsched_rules.lua, which `adsched slurm render` writes beside this file from
the cluster TOML. Runs inside slurmctld under its locks, once per submission: no I/O, no
shell, no Python here.

  * queue defaults: partition (the default queue) and time limit (the queue's default);
  * queue limits: max time, max GPUs per job; unknown queues are refused;
  * gang shape: a multi-node GPU job takes whole nodes (all GPUs of each node);
  * topology: a request "adsched:max_leaves=N[;wait=SECONDS]" in --comment becomes
    req_switch / wait4switch (Slurm's --switches=N@wait);
  * metadata for the hooks: the comment is rewritten to
    "adsched:queue=Q;tier=T;max_leaves=N" (prologs see it as SLURM_JOB_COMMENT).
  * controller mode (rules.controller): every job is held at submit (priority 0) and may be
    requeued (the controller preempts by requeue); node lists are adsched's to choose, so
    -w/-x are refused; only root (the controller) may change priority or node lists later.
A refused job gets one line at the user's prompt via slurm.log_user.
]]

local function script_dir()
  local source = debug.getinfo(1, "S").source
  return (source:sub(1, 1) == "@" and source:sub(2):match("^(.*/)")) or "./"
end

local rules = dofile(script_dir() .. "adsched_rules.lua")

local function unset(v)
  return v == nil or v == slurm.NO_VAL or v == slurm.NO_VAL16 or v == slurm.NO_VAL64 or v == -2
end

local function refuse(msg)
  slurm.log_user("adsched: " .. msg)
  return slurm.ERROR
end

-- GPUs per node from tres_per_node: "gres:gpu:8", "gres/gpu:h100:8", "gpu:8", "gres:gpu".
local function gpus_per_node(tres)
  if tres == nil or tres == "" then return 0 end
  local total = 0
  for item in string.gmatch(tres, "[^,]+") do
    local spec = item:gsub("^gres[:/]", "")
    if spec == "gpu" or spec:match("^gpu:") then
      total = total + (tonumber(spec:match(":(%d+)$")) or 1)
    end
  end
  return total
end

-- "adsched:max_leaves=2;wait=600" (anywhere in the comment) -> 2, 600
local function topology_request(comment)
  if comment == nil then return nil, nil end
  local leaves = tonumber(comment:match("max_leaves=(%d+)"))
  local wait = tonumber(comment:match("wait=(%d+)"))
  return leaves, wait
end

function slurm_job_submit(job_desc, part_list, submit_uid)
  local qname = job_desc.partition
  if qname == nil or qname == "" then qname = rules.default_queue end
  if qname:find(",") then return refuse("submit to one queue, not a list (" .. qname .. ")") end
  local q = rules.queues[qname]
  if q == nil then return refuse("unknown queue '" .. qname .. "'") end
  job_desc.partition = qname

  if unset(job_desc.time_limit) then
    job_desc.time_limit = q.default_time
  elseif q.max_time ~= nil and job_desc.time_limit > q.max_time then
    return refuse(string.format("time limit %d min exceeds queue %s max of %d min", job_desc.time_limit, qname, q.max_time))
  end

  local nodes = unset(job_desc.min_nodes) and 1 or job_desc.min_nodes
  if nodes > rules.nodes then
    return refuse(string.format("%d nodes asked, the cluster has %d", nodes, rules.nodes))
  end
  local gpn = gpus_per_node(job_desc.tres_per_node)
  if nodes > 1 and gpn > 0 and gpn ~= rules.gpus_per_node then
    return refuse(string.format("a multi-node GPU job takes whole nodes: ask --gres=gpu:%d (got gpu:%d on %d nodes)",
                                rules.gpus_per_node, gpn, nodes))
  end
  if q.max_gpus_per_job ~= nil and nodes * gpn > q.max_gpus_per_job then
    return refuse(string.format("%d GPUs exceed queue %s limit of %d per job", nodes * gpn, qname, q.max_gpus_per_job))
  end

  local leaves, wait = topology_request(job_desc.comment)
  if rules.controller and leaves == nil and not unset(job_desc.req_switch) and job_desc.req_switch > 0 then
    leaves = job_desc.req_switch  -- raw --switches=N: the core keeps the job within N leaves
  end
  if leaves ~= nil and leaves >= 1 and rules.leaf_sizes ~= nil then
    local room = 0
    for i = 1, math.min(leaves, #rules.leaf_sizes) do room = room + rules.leaf_sizes[i] end
    if nodes > room then
      return refuse(string.format("%d nodes can never fit within %d leaf(s): the largest hold %d nodes", nodes, leaves, room))
    end
  end
  if rules.controller then
    if job_desc.req_nodes ~= nil and job_desc.req_nodes ~= "" or job_desc.exc_nodes ~= nil and job_desc.exc_nodes ~= "" then
      return refuse("adsched chooses the nodes: -w/--nodelist and -x/--exclude are not accepted (drain nodes instead)")
    end
    if leaves ~= nil and leaves < 1 then return refuse("max_leaves must be >= 1") end
    job_desc.priority = 0  -- held until the adsched controller releases it on the nodes it chose
    if unset(job_desc.requeue) then job_desc.requeue = 1 end
  elseif leaves ~= nil then
    if leaves < 1 then return refuse("max_leaves must be >= 1") end
    job_desc.req_switch = leaves
    if wait ~= nil then job_desc.wait4switch = wait end
  end

  job_desc.comment = string.format("adsched:queue=%s;tier=%d;max_leaves=%s", qname, q.tier, leaves or "")
  return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
  if rules.controller and modify_uid ~= 0 then
    if not unset(job_desc.priority) then return refuse("jobs are released by the adsched controller") end
    if job_desc.req_nodes ~= nil or job_desc.exc_nodes ~= nil or not unset(job_desc.req_switch) then
      return refuse("adsched chooses the nodes")
    end
  end
  return slurm.SUCCESS
end

return slurm.SUCCESS
