-- Argo CD health of an aiops.dev/v1alpha1 VectorIndex, from status.phase and conditions.
-- Healthy: the index serves (Ready). Suspended: ingestion paused (spec.ingest.suspend) while
-- nothing is wrong. Degraded: invalid spec, failed or degraded index. Progressing: the rest.
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

local st = obj.status or {}
local phase = st.phase or "Pending"
local valid = condition(st, "Valid")
local ready = condition(st, "Ready")
local generation = obj.metadata and obj.metadata.generation
local suspended = obj.spec ~= nil and obj.spec.ingest ~= nil and obj.spec.ingest.suspend == true

if phase == "Invalid" or (valid ~= nil and valid.status == "False") then
  hs.status = "Degraded"
  hs.message = "Invalid spec (" .. ((valid and valid.reason) or "Invalid") .. "): " .. said(valid, "see the Valid condition")
  return hs
end
if phase == "Failed" or phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = phase .. ": " .. said(ready, "see the conditions")
  return hs
end
if suspended then
  hs.status = "Suspended"
  hs.message = "Ingestion is suspended (spec.ingest.suspend); the index keeps serving"
  return hs
end
if obj.status == nil then
  return hs
end
if generation ~= nil and st.observedGeneration ~= nil and st.observedGeneration < generation then
  hs.message = "The operator has not yet seen generation " .. generation
  return hs
end
if phase == "Ready" and (ready == nil or ready.status == "True") then
  hs.status = "Healthy"
  hs.message = said(ready, "The index serves")
  return hs
end
hs.message = phase .. ": " .. said(ready, "in progress")
return hs
