// The device lifecycle as data: one row per allowed transition (DESIGN.md, Lifecycle). Code never
// tests states with ad-hoc ifs; it looks the (event, from-state) pair up in kTransitions.
#ifndef FLEETID_REGISTRY_LIFECYCLE_H_
#define FLEETID_REGISTRY_LIFECYCLE_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "common/error.h"

namespace fleetid::registry {

enum class State {
  kManufactured,     // imported from a signed factory batch
  kProvisioned,      // owner, tenant and region bound
  kActive,           // attested, holds a valid LDevID
  kSuspended,        // credentials on hold; resumable
  kQuarantined,      // suspected compromise: credentials revoked (keyCompromise)
  kDecommissioning,  // credentials on hold; reversible until the grace period ends
  kDecommissioned,   // final: credentials revoked (cessationOfOperation), identity tombstoned
};

enum class Event {
  kProvision,
  kActivate,
  kSuspend,
  kResume,
  kQuarantine,
  kReattest,
  kUpdate,  // firmware update recorded on an active device ("updated")
  kRotate,  // key rotation recorded on an active device ("rotated")
  kDecommission,
  kCancelDecommission,
  kFinalizeDecommission,
  kErased,  // the device reports its keys destroyed (signed receipt): decommissioned at once
  kClear,   // an operator lifts a quarantine: the device must enroll afresh (new key, evidence)
};

// Who may cause a transition. An operator additionally needs the named role.
enum ActorKind : std::uint8_t {
  kOperator = 1 << 0,
  kDevice = 1 << 1,
  kScheduler = 1 << 2,
};

enum class Evidence {
  kNone,
  kReason,            // a human reason is mandatory
  kAttestation,       // fresh, verified attestation evidence (digest recorded)
  kFirmwareMeasurement,
  kPossession,        // proof of possession of the new key
  kReceipt,           // a decommissioning receipt signed by the device (digest recorded)
};

// What the transition does to the device's credentials, carried out through the PKI in the same
// transaction (RFC 5280 §5.3.1 reason codes where a revocation is involved).
enum class CredentialAction {
  kNone,
  kIssue,             // a new credential becomes current (enrollment)
  kHold,              // certificateHold on every live credential
  kRelease,           // removeFromCRL: lift the hold
  kRevokeCompromise,  // keyCompromise on every live credential
  kRevokeCessation,   // cessationOfOperation on every credential, and the identity is tombstoned
  kSupersede,         // the pending credential becomes current, the old one superseded
};

struct TransitionRule {
  Event event;
  State from;
  State to;              // kTransitions rows whose |to| equals |from| record an event on a state
  std::uint8_t actors;   // ActorKind bits
  std::string_view role; // operator role required ("" when operators may not cause it)
  Evidence evidence;
  CredentialAction action;
};

// Every allowed transition. Anything not listed is refused with kConflict.
std::span<const TransitionRule> Transitions();

// FindRule returns the rule for |event| from |from|, or kConflict naming both.
[[nodiscard]] Result<const TransitionRule*> FindRule(Event event, State from);

bool IsFinal(State state);

std::string_view StateName(State state);
std::string_view EventName(Event event);
[[nodiscard]] Result<State> ParseState(std::string_view name);
[[nodiscard]] Result<Event> ParseEvent(std::string_view name);

}  // namespace fleetid::registry

#endif  // FLEETID_REGISTRY_LIFECYCLE_H_
