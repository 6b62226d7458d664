#include "agent/plan.h"

#include <array>
#include <utility>

namespace fleetid::agent {
namespace {

constexpr std::array<std::pair<DeviceState, std::string_view>, 7> kStateNames{{
    {DeviceState::kManufactured, "manufactured"},
    {DeviceState::kProvisioned, "provisioned"},
    {DeviceState::kActive, "active"},
    {DeviceState::kSuspended, "suspended"},
    {DeviceState::kQuarantined, "quarantined"},
    {DeviceState::kDecommissioning, "decommissioning"},
    {DeviceState::kDecommissioned, "decommissioned"},
}};

}  // namespace

DeviceState ParseDeviceState(std::string_view name) {
  for (const auto& [state, text] : kStateNames) {
    if (text == name) return state;
  }
  return DeviceState::kUnknown;
}

std::string_view DeviceStateName(DeviceState state) {
  for (const auto& [s, text] : kStateNames) {
    if (s == state) return text;
  }
  return "unknown";
}

std::string_view CredentialName(Credential credential) {
  switch (credential) {
    case Credential::kNone:
      return "none";
    case Credential::kGood:
      return "good";
    case Credential::kLapsed:
      return "lapsed";
    case Credential::kRevoked:
      return "revoked";
  }
  return "unknown";
}

std::string_view StepName(Step step) {
  switch (step) {
    case Step::kNothing:
      return "none";
    case Step::kWait:
      return "waiting";
    case Step::kFinishRotation:
      return "finish-rotation";
    case Step::kEnroll:
      return "enroll";
    case Step::kRotate:
      return "rotate";
  }
  return "unknown";
}

Plan Decide(const Situation& s) {
  Plan plan;
  plan.erase_current = s.current == Credential::kRevoked;
  switch (s.device) {
    case DeviceState::kActive:
      if (s.current == Credential::kGood) {
        if (s.pending_key) {
          plan.step = Step::kFinishRotation;
        } else if (s.renewal_due || s.force_rotate) {
          plan.step = Step::kRotate;
        }
      } else {
        // A certified pending key may be current at the authority already (the agent died after
        // confirming); confirming it is harmless. Without one, the IDevID enrolls (reusing an
        // uncertified pending key).
        plan.step = s.pending_cert ? Step::kFinishRotation : Step::kEnroll;
      }
      return plan;
    case DeviceState::kProvisioned:
      // No usable credential at the authority (first boot, or a quarantine lifted): enroll
      // afresh whatever the agent holds; a good but unrecognised LDevID goes once replaced.
      plan.step = Step::kEnroll;
      return plan;
    case DeviceState::kSuspended:
      plan.step = Step::kWait;
      plan.waiting_for = "an operator to resume the device";
      return plan;
    case DeviceState::kQuarantined:
      plan.step = Step::kWait;
      plan.waiting_for = "an operator to clear the quarantine";
      return plan;
    case DeviceState::kManufactured:
      plan.step = Step::kWait;
      plan.waiting_for = "an operator to provision the device";
      return plan;
    case DeviceState::kDecommissioning:
    case DeviceState::kDecommissioned:
      // The order is obeyed by the poll while a key can sign the receipt; otherwise the
      // authority's grace period ends it.
      plan.step = Step::kWait;
      plan.waiting_for = "the end of decommissioning";
      return plan;
    case DeviceState::kUnknown:
      break;
  }
  plan.step = Step::kWait;
  plan.waiting_for = "a device state this agent knows";
  return plan;
}

}  // namespace fleetid::agent
