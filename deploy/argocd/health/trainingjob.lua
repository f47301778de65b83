-- Argo CD health of an aiops.dev/v1alpha1 TrainingJob, from status.phase and conditions.
-- Healthy: the model is trained, optimized and registered. Degraded: invalid spec or failed
-- (data validation, training, or the quality gate). Progressing: any step under way.
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
local phase = st.phase or "Pending"
local valid = condition(st, "Valid")
local generation = obj.metadata and obj.metadata.generation

if phase == "Invalid" or (valid ~= nil and valid.status == "False") then
  hs.status = "Degraded"
  hs.message = "Invalid spec (" .. ((valid and valid.reason) or "Invalid") .. "): " .. said(valid, "see the Valid condition")
  return hs
end
if phase == "Failed" then
  -- The first condition that is False says why (e.g. data validation or the quality gate).
  local failed = nil
  if st.conditions ~= nil then
    for _, c in ipairs(st.conditions) do
      if c.status == "False" and failed == nil then
        failed = c
      end
    end
  end
  hs.status = "Degraded"
  hs.message = "Failed" .. ((failed and failed.reason and (" (" .. failed.reason .. ")")) or "") .. ": " .. said(failed, "see the conditions")
  return hs
end
if generation ~= nil and st.observedGeneration ~= nil and st.observedGeneration < generation then
  hs.message = "The operator has not yet seen generation " .. generation
  return hs
end
if phase == "Registered" then
  hs.status = "Healthy"
  local produced = st.producedModel
  if produced ~= nil and produced.name ~= nil then
    hs.message = "Registered " .. produced.name .. ((produced.version and (" version " .. produced.version)) or "")
  else
    hs.message = "Trained, optimized and registered"
  end
  return hs
end
-- The running step's own message, when it has one (steps: name, state, message).
local detail = nil
if st.steps ~= nil then
  for _, step in ipairs(st.steps) do
    if step.state == "Running" and step.message ~= nil then
      detail = step.name .. ": " .. step.message
    end
  end
end
hs.message = phase .. ((detail and (" - " .. detail)) or "")
return hs
