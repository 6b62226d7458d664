// Signed approvals (docs/operators.md § Signed approvals): an approver's operator key signs a JWS
// over the request's digest, with the approver's certificate chain in the header ("x5c"), so the
// approval can be verified later from the audit log alone, without the server.
//
// The payload is {"type":"fleetid.approval/v1","request":"policy proposal 7","digest":"<hex>",
// "decision":"approve"}; the protected header is {"alg","typ":"fleetid-approval+jws","x5c"}.
#ifndef FLEETID_OPERATORS_APPROVAL_H_
#define FLEETID_OPERATORS_APPROVAL_H_

#include <openssl/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace fleetid::operators {

inline constexpr std::string_view kApprovalType = "fleetid-approval+jws";

// SignApproval signs |decision| ("approve") of |request| (as the server names it, "policy
// proposal 7") whose digest is |digest|, with |key| (usually a token key), the approver's
// certificate chain |chain_der| (leaf first) carried in the header.
[[nodiscard]] Result<std::string> SignApproval(
    EVP_PKEY* key, const std::vector<std::vector<std::uint8_t>>& chain_der,
    std::string_view request, std::string_view digest, std::string_view decision);

// VerifiedApproval is what a signature proves: the key of |chain_der|'s leaf signed this request's
// digest. Whether that certificate is an operator's, and whose, is the caller's to judge (the
// server: it is the certificate the session authenticated; offline: it chains to the operators'
// CA and names the approver).
struct VerifiedApproval {
  std::vector<std::vector<std::uint8_t>> chain_der;  // from the header, leaf first
};

// VerifyApproval checks |jws|: its type, its signature by the key of the leaf in "x5c" (the
// algorithm exactly the one that key takes), and that its payload names |request|, |digest| and
// |decision|. kInvalidArgument for a malformed one, kUnauthenticated for a wrong signature or a
// payload about anything else.
[[nodiscard]] Result<VerifiedApproval> VerifyApproval(std::string_view jws,
                                                      std::string_view request,
                                                      std::string_view digest,
                                                      std::string_view decision);

}  // namespace fleetid::operators

#endif  // FLEETID_OPERATORS_APPROVAL_H_
