-- Argo CD health of an aiops.dev/v1alpha1 ModelDeployment, from status.phase and conditions.
-- Healthy: the spec's version serves and is healthy. Degraded: invalid spec, failed rollout,
-- unhealthy or degraded serving (the Degraded condition of monitoring), or a rolled-back version
-- (Git asks for a version that does not serve).
-- Progressing: the operator has not caught up with the spec yet, or a rollout is under way.
local hs = {status = "Progressing", message = "Waiting for the operator to report status"}

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function said(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

if obj.status == nil then
  return hs
end
local st = obj.status
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and st.observedGeneration ~= nil and st.observedGeneration < generation then
  hs.message = "The operator has not yet seen generation " .. generation
  return hs
end

local phase = st.phase or "Pending"
local valid = condition(st, "Valid")
local ready = condition(st, "Ready")
local rolledBack = condition(st, "RolledBack")

if phase == "Invalid" or (valid ~= nil and valid.status == "False") then
  hs.status = "Degraded"
  hs.message = "Invalid spec (" .. ((valid and valid.reason) or "Invalid") .. "): " .. said(valid, "see the Valid condition")
  return hs
end
if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = said(ready, "The rollout failed and nothing serves")
  return hs
end
if rolledBack ~= nil and rolledBack.status == "True" and st.rollout == nil then
  hs.status = "Degraded"
  hs.message = said(rolledBack, "Rolled back to the last good version")
  return hs
end
-- Degraded (monitoring: latency, errors, accuracy... past the thresholds), or unhealthy pods.
local degraded = condition(st, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = (degraded.reason or "Degraded") .. ": " .. said(degraded, "the serving version is degraded")
  return hs
end
if phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = said(ready, "The serving version is unhealthy")
  return hs
end
if phase == "Ready" and ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = said(ready, "Serving")
  return hs
end
-- Pending, Validating, Deploying, HealthChecking, or Ready not yet confirmed.
local step = (st.rollout and st.rollout.step) or phase
local resources = condition(st, "ResourcesAvailable")
if resources ~= nil and resources.status == "False" then
  hs.message = step .. ": " .. said(resources, "waiting for GPUs")
elseif st.rollout ~= nil and st.rollout.version ~= nil then
  hs.message = "Rolling out version " .. st.rollout.version .. ": " .. step
else
  hs.message = step .. ": " .. said(ready, "in progress")
end
return hs
