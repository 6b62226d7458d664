// Decide: what fleetid-agent's `once` does, given what the authority said about the device and
// what the agent knows of its own credential. A pure function, so every case is a unit test;
// Agent::Once gathers the facts (status poll, expiry, OCSP) and carries out the plan.
#ifndef FLEETID_AGENT_PLAN_H_
#define FLEETID_AGENT_PLAN_H_

#include <string_view>

namespace fleetid::agent {

// DeviceState is the registry state GET /device/v1/status reports, by its wire name
// (registry::StateName); kUnknown for a name this agent does not know.
enum class DeviceState {
  kUnknown,
  kManufactured,
  kProvisioned,
  kActive,
  kSuspended,
  kQuarantined,
  kDecommissioning,
  kDecommissioned,
};
DeviceState ParseDeviceState(std::string_view name);
std::string_view DeviceStateName(DeviceState state);

// Credential is what the agent knows of its current LDevID.
enum class Credential {
  kNone,     // never enrolled, or dropped
  kGood,     // unexpired, and neither the status poll nor OCSP refused it
  kLapsed,   // past notAfter
  kRevoked,  // the authority refused it (403 at the status poll, and its status does not name
             // it as the device's usable credential) or a verified OCSP answer says revoked for
             // a reason other than certificateHold: its key is useless
};
std::string_view CredentialName(Credential credential);

enum class Step {
  kNothing,         // nothing due
  kWait,            // the device's state forbids enrolling and rotating: poll again later
  kFinishRotation,  // confirm (and, with a usable current LDevID, certify) the pending rotation
  kEnroll,          // enroll afresh with the IDevID and fresh evidence
  kRotate,          // start a rotation with the current LDevID
};
std::string_view StepName(Step step);

struct Situation {
  DeviceState device = DeviceState::kUnknown;
  Credential current = Credential::kNone;
  bool pending_key = false;   // a rotation's (or an interrupted enrollment's) new key exists
  bool pending_cert = false;  // ... and the authority issued its pending certificate
  bool renewal_due = false;
  bool force_rotate = false;
};

struct Plan {
  // Destroy the current LDevID's key (and forget the credential) before the step. Only a
  // revoked credential's key goes here; a lapsed one stays until its replacement is enrolled.
  bool erase_current = false;
  Step step = Step::kNothing;
  // For kWait: what the device waits for, for the agent's report.
  std::string_view waiting_for;
};

// Decide never plans an enrollment or a rotation, nor the key generation they start, unless the
// device is provisioned (it must enroll afresh: the authority holds no usable credential of it)
// or active. A rotation is finished only while active; a current LDevID the authority no longer
// honours is replaced by enrolling with the IDevID, after a pending rotation, which may have
// completed at the authority while the agent was away, had its chance.
[[nodiscard]] Plan Decide(const Situation& situation);

}  // namespace fleetid::agent

#endif  // FLEETID_AGENT_PLAN_H_
