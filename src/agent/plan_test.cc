// Decide, the agent's choice of what `once` does, over every device state and credential.
#include "agent/plan.h"

#include <gtest/gtest.h>

namespace fleetid::agent {
namespace {

Situation With(DeviceState device, Credential current) {
  return Situation{.device = device, .current = current};
}

TEST(AgentPlanTest, StateNamesRoundTripAndUnknownNamesAreUnknown) {
  for (DeviceState s : {DeviceState::kManufactured, DeviceState::kProvisioned, DeviceState::kActive,
                        DeviceState::kSuspended, DeviceState::kQuarantined,
                        DeviceState::kDecommissioning, DeviceState::kDecommissioned}) {
    EXPECT_EQ(ParseDeviceState(DeviceStateName(s)), s) << DeviceStateName(s);
  }
  EXPECT_EQ(ParseDeviceState(""), DeviceState::kUnknown);
  EXPECT_EQ(ParseDeviceState("Active"), DeviceState::kUnknown);
}

TEST(AgentPlanTest, ActiveWithAGoodCredentialRotatesOnlyWhenDue) {
  EXPECT_EQ(Decide(With(DeviceState::kActive, Credential::kGood)).step, Step::kNothing);
  Situation due = With(DeviceState::kActive, Credential::kGood);
  due.renewal_due = true;
  EXPECT_EQ(Decide(due).step, Step::kRotate);
  Situation forced = With(DeviceState::kActive, Credential::kGood);
  forced.force_rotate = true;
  EXPECT_EQ(Decide(forced).step, Step::kRotate);
  EXPECT_FALSE(Decide(forced).erase_current);
}

TEST(AgentPlanTest, AHalfDoneRotationIsFinishedBeforeAnythingElse) {
  Situation s = With(DeviceState::kActive, Credential::kGood);
  s.pending_key = true;  // killed after making the key
  s.renewal_due = true;
  EXPECT_EQ(Decide(s).step, Step::kFinishRotation);
  s.pending_cert = true;  // killed after the pending certificate was issued
  EXPECT_EQ(Decide(s).step, Step::kFinishRotation);
}

// The reported defect: a revoked current LDevID (superseded by an operator, or revoked for
// keyCompromise and the quarantine then cleared) was kept and never replaced.
TEST(AgentPlanTest, ARevokedCredentialIsErasedAndReplacedByEnrollingWhenActive) {
  const Plan p = Decide(With(DeviceState::kActive, Credential::kRevoked));
  EXPECT_TRUE(p.erase_current);
  EXPECT_EQ(p.step, Step::kEnroll);
}

TEST(AgentPlanTest, ARevokedCredentialIsErasedAndReplacedByEnrollingWhenProvisioned) {
  const Plan p = Decide(With(DeviceState::kProvisioned, Credential::kRevoked));
  EXPECT_TRUE(p.erase_current);
  EXPECT_EQ(p.step, Step::kEnroll);
}

TEST(AgentPlanTest, ProvisionedEnrollsAfreshWhateverTheAgentHolds) {
  for (Credential c : {Credential::kNone, Credential::kGood, Credential::kLapsed}) {
    const Plan p = Decide(With(DeviceState::kProvisioned, c));
    EXPECT_EQ(p.step, Step::kEnroll) << CredentialName(c);
    EXPECT_FALSE(p.erase_current) << CredentialName(c);  // replaced once enrolled, not before
  }
  Situation s = With(DeviceState::kProvisioned, Credential::kGood);
  s.pending_key = true;
  s.pending_cert = true;  // a rotation the authority forgot with the credential
  EXPECT_EQ(Decide(s).step, Step::kEnroll);
}

// After the agent died past the confirm, the authority superseded the old certificate and made
// the pending one current: the refused old LDevID goes and the rotation is finished, not
// replaced by an enrollment.
TEST(AgentPlanTest, ARefusedCredentialWithACertifiedPendingKeyFinishesTheRotation) {
  Situation s = With(DeviceState::kActive, Credential::kRevoked);
  s.pending_key = true;
  s.pending_cert = true;
  const Plan p = Decide(s);
  EXPECT_TRUE(p.erase_current);
  EXPECT_EQ(p.step, Step::kFinishRotation);
  s.pending_cert = false;  // an uncertified key cannot be certified without the current LDevID
  EXPECT_EQ(Decide(s).step, Step::kEnroll);
}

TEST(AgentPlanTest, LapsedOrMissingCredentialsEnrollWhenActiveAndKeepTheirKeyUntilThen) {
  for (Credential c : {Credential::kNone, Credential::kLapsed}) {
    const Plan p = Decide(With(DeviceState::kActive, c));
    EXPECT_EQ(p.step, Step::kEnroll) << CredentialName(c);
    EXPECT_FALSE(p.erase_current) << CredentialName(c);
  }
}

// Suspended, quarantined (and every other state that forbids it): no enrollment, no rotation,
// no key generation, whatever is due or forced; a revoked key is still erased.
TEST(AgentPlanTest, SuspendedAndQuarantinedDevicesWait) {
  for (DeviceState d :
       {DeviceState::kSuspended, DeviceState::kQuarantined, DeviceState::kManufactured,
        DeviceState::kDecommissioning, DeviceState::kDecommissioned, DeviceState::kUnknown}) {
    for (Credential c :
         {Credential::kNone, Credential::kGood, Credential::kLapsed, Credential::kRevoked}) {
      Situation s = With(d, c);
      s.renewal_due = true;
      s.force_rotate = true;
      s.pending_key = true;
      s.pending_cert = true;
      const Plan p = Decide(s);
      EXPECT_EQ(p.step, Step::kWait) << DeviceStateName(d) << " " << CredentialName(c);
      EXPECT_FALSE(p.waiting_for.empty());
      EXPECT_EQ(p.erase_current, c == Credential::kRevoked)
          << DeviceStateName(d) << " " << CredentialName(c);
    }
  }
  EXPECT_EQ(Decide(With(DeviceState::kSuspended, Credential::kGood)).waiting_for,
            "an operator to resume the device");
  EXPECT_EQ(Decide(With(DeviceState::kQuarantined, Credential::kRevoked)).waiting_for,
            "an operator to clear the quarantine");
}

}  // namespace
}  // namespace fleetid::agent
