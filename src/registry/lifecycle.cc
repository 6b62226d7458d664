#include "registry/lifecycle.h"

#include <array>

namespace fleetid::registry {
namespace {

constexpr std::uint8_t kOp = kOperator;
constexpr std::uint8_t kDev = kDevice;
constexpr std::uint8_t kSched = kScheduler;

using S = State;
using E = Event;
using A = CredentialAction;
using V = Evidence;

// clang-format off
constexpr TransitionRule kRules[] = {
  // event                   from                 to                  actors          role           evidence                 credentials
  {E::kProvision,            S::kManufactured,    S::kProvisioned,    kOp,            "provisioner", V::kNone,                A::kNone},
  {E::kActivate,             S::kProvisioned,     S::kActive,         kDev,           "",            V::kAttestation,         A::kIssue},
  {E::kSuspend,              S::kActive,          S::kSuspended,      kOp,            "operator",    V::kReason,              A::kHold},
  {E::kResume,               S::kSuspended,       S::kActive,         kOp,            "operator",    V::kReason,              A::kRelease},
  {E::kQuarantine,           S::kActive,          S::kQuarantined,    kOp | kSched,   "security",    V::kReason,              A::kRevokeCompromise},
  {E::kQuarantine,           S::kSuspended,       S::kQuarantined,    kOp | kSched,   "security",    V::kReason,              A::kRevokeCompromise},
  // A quarantine is lifted only by an operator; the device then enrolls afresh from
  // provisioned, with a new key and fresh evidence.
  {E::kClear,                S::kQuarantined,     S::kProvisioned,    kOp,            "security",    V::kReason,              A::kNone},
  // Re-enrollment with the IDevID after the operational certificate lapsed (an outage longer
  // than its life); the enrollment service checks that no current credential is still valid.
  {E::kReattest,             S::kActive,          S::kActive,         kDev,           "",            V::kAttestation,         A::kIssue},
  {E::kUpdate,               S::kActive,          S::kActive,         kDev | kOp,     "operator",    V::kFirmwareMeasurement, A::kNone},
  {E::kRotate,               S::kActive,          S::kActive,         kDev,           "",            V::kPossession,          A::kSupersede},
  {E::kDecommission,         S::kManufactured,    S::kDecommissioning, kOp,           "admin",       V::kReason,              A::kHold},
  {E::kDecommission,         S::kProvisioned,     S::kDecommissioning, kOp,           "admin",       V::kReason,              A::kHold},
  {E::kDecommission,         S::kActive,          S::kDecommissioning, kOp,           "admin",       V::kReason,              A::kHold},
  {E::kDecommission,         S::kSuspended,       S::kDecommissioning, kOp,           "admin",       V::kReason,              A::kHold},
  {E::kDecommission,         S::kQuarantined,     S::kDecommissioning, kOp,           "admin",       V::kReason,              A::kHold},
  // Back to the state the device was in before decommissioning began (recorded on the device).
  {E::kCancelDecommission,   S::kDecommissioning, S::kDecommissioning, kOp,          "admin",       V::kReason,              A::kRelease},
  {E::kFinalizeDecommission, S::kDecommissioning, S::kDecommissioned, kSched,         "",            V::kNone,                A::kRevokeCessation},
  // The device's receipt that it destroyed its operational keys ends the grace period early.
  {E::kErased,               S::kDecommissioning, S::kDecommissioned, kDev,           "",            V::kReceipt,             A::kRevokeCessation},
};
// clang-format on

constexpr std::array<std::string_view, 7> kStateNames = {
    "manufactured", "provisioned", "active", "suspended", "quarantined", "decommissioning",
    "decommissioned"};
constexpr std::array<std::string_view, 13> kEventNames = {"provision",
                                                          "activate",
                                                          "suspend",
                                                          "resume",
                                                          "quarantine",
                                                          "reattest",
                                                          "updated",
                                                          "rotated",
                                                          "decommission",
                                                          "cancel_decommission",
                                                          "finalize_decommission",
                                                          "erased",
                                                          "clear"};

}  // namespace

std::span<const TransitionRule> Transitions() { return kRules; }

Result<const TransitionRule*> FindRule(Event event, State from) {
  for (const TransitionRule& r : kRules) {
    if (r.event == event && r.from == from) return &r;
  }
  return MakeError(ErrorCode::kConflict, "'{}' is not allowed from state '{}'", EventName(event),
                   StateName(from));
}

bool IsFinal(State state) { return state == State::kDecommissioned; }

std::string_view StateName(State state) { return kStateNames.at(static_cast<std::size_t>(state)); }
std::string_view EventName(Event event) { return kEventNames.at(static_cast<std::size_t>(event)); }

Result<State> ParseState(std::string_view name) {
  for (std::size_t i = 0; i < kStateNames.size(); ++i) {
    if (kStateNames[i] == name) return static_cast<State>(i);
  }
  return MakeError(ErrorCode::kInvalidArgument, "unknown state '{}'", name);
}

Result<Event> ParseEvent(std::string_view name) {
  for (std::size_t i = 0; i < kEventNames.size(); ++i) {
    if (kEventNames[i] == name) return static_cast<Event>(i);
  }
  return MakeError(ErrorCode::kInvalidArgument, "unknown event '{}'", name);
}

}  // namespace fleetid::registry
