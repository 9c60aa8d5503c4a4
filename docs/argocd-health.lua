-- Argo CD health check for emailplan.io/EmailPlan, read from the kstatus-style conditions the
-- operator writes (each carries observedGeneration). A failed rollout gate or an A/B test
-- waiting for a person is Stalled (Degraded); a closed send window is Suspended. Install it under
-- resource.customizations.health.emailplan.io_EmailPlan in argocd-cm (docs/operations.md).
local hs = {status = "Progressing", message = "waiting for the operator"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < generation then
  hs.message = "the operator has not acted on the latest spec yet"
  return hs
end
local c = {}
for _, condition in ipairs(obj.status.conditions) do
  c[condition.type] = condition
end
local function is(kind)
  return c[kind] ~= nil and c[kind].status == "True"
end
local message = obj.status.message or ""
if is("Stalled") then
  return {status = "Degraded", message = c.Stalled.message or message}
end
if is("Complete") then
  return {status = "Healthy", message = message}
end
if is("Suspended") then
  return {status = "Suspended", message = c.Suspended.message or message}
end
-- Outside its send window the plan waits by itself (phase Scheduled): nobody needs to act.
if c.InSendWindow ~= nil and c.InSendWindow.status == "False" then
  return {status = "Suspended", message = c.InSendWindow.message or message}
end
-- A rollout hold or the wait for the A/B winner (phase Holding) is Reconciling: Progressing.
if is("Ready") and not is("Reconciling") then
  return {status = "Healthy", message = message}
end
return {status = "Progressing", message = message}
