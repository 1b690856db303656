-- Argo CD health of an Enclave Operator object (every kind), from its kstatus conditions:
--   being deleted, or status not yet written for this generation      -> Progressing
--   Stalled=True (needs a human: invalid spec, NotOwned, failed ingest) -> Degraded
--   a FederatedNode not Compliant, not LegallyCleared, Offline, or with its backup overdue/failed -> Degraded
--   waiting for a person: Ready=False with reason AwaitingApproval      -> Suspended
--   Cordoned=True (the project's ethics approval ended; data kept)      -> Suspended
--   Ready=True                                                          -> Healthy
--   finished: Ready=False, Reconciling=False, Stalled=False (an Expired or Cancelled GpuReservation)
--                                                                       -> Healthy
--   anything else (parts still converging, a backend retried)           -> Progressing
-- Suspended, not Progressing, for approvals: nothing happens until a platform admin or a data steward
-- acts, and Argo CD should say so rather than wait.
local hs = { status = "Progressing", message = "Waiting for the operator" }

local function condition(conditions, kind)
  if conditions == nil then return nil end
  for _, c in ipairs(conditions) do
    if c.type == kind then return c end
  end
  return nil
end

local function say(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then return c.message end
  if c ~= nil and c.reason ~= nil then return c.reason end
  return fallback
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Being deleted"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local ready = condition(conditions, "Ready")
local stalled = condition(conditions, "Stalled")
local cordoned = condition(conditions, "Cordoned")
local reconciling = condition(conditions, "Reconciling")

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = say(stalled, "Stalled")
  return hs
end
-- Kept in step with metrics.DEGRADED_WHEN (the operator's own enclave_objects state): {type, status, reasons}.
local degraded_when = {
  { "Compliant", "False", {} },
  { "LegallyCleared", "False", {} },
  { "Reachable", "False", { "Offline" } },
  { "BackupCurrent", "False", { "BackupOverdue", "BackupFailed" } },
}
for _, rule in ipairs(degraded_when) do
  local c = condition(conditions, rule[1])
  if c ~= nil and c.status == rule[2] then
    local matches = #rule[3] == 0
    for _, why in ipairs(rule[3]) do
      if c.reason == why then matches = true end
    end
    if matches then
      hs.status = "Degraded"
      hs.message = say(c, rule[1])
      return hs
    end
  end
end
if ready ~= nil and ready.status == "False" and ready.reason == "AwaitingApproval" then
  hs.status = "Suspended"
  hs.message = say(ready, "Awaiting approval")
  return hs
end
if cordoned ~= nil and cordoned.status == "True" then
  hs.status = "Suspended"
  hs.message = say(cordoned, "Cordoned")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = say(ready, "Ready")
  return hs
end
-- Finished: neither the operator nor a person has anything left to do (a booking whose window ended or
-- that was cancelled). Healthy as for a completed Job: Progressing would make a sync wait forever.
if ready ~= nil and ready.status == "False" and reconciling ~= nil and reconciling.status == "False" then
  hs.status = "Healthy"
  hs.message = say(ready, "Finished")
  return hs
end
hs.message = say(ready, "Not ready yet")
return hs
