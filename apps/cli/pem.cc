#include "apps/cli/pem.h"

#include <openssl/pem.h>

#include "apps/cli/cli.h"
#include "crypto/crypto.h"
#include "crypto/x509.h"

namespace fleetid::cli {

std::string CertPem(std::span<const std::uint8_t> der) {
  auto cert = crypto::ParseCertificateDer(der);
  if (!cert.has_value()) return {};
  auto pem = crypto::CertificatePem(cert->get());
  return pem.has_value() ? std::move(*pem) : std::string();
}

Result<std::vector<std::uint8_t>> CsrDer(const std::string& text) {
  if (text.find("-----BEGIN") == std::string::npos) {
    return std::vector<std::uint8_t>(text.begin(), text.end());
  }
  crypto::BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  crypto::X509ReqPtr req(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!req) {
    return MakeError(ErrorCode::kInvalidArgument, "the CSR file is not a PEM certificate request");
  }
  const int len = i2d_X509_REQ(req.get(), nullptr);
  std::vector<std::uint8_t> der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  i2d_X509_REQ(req.get(), &p);
  return der;
}

Result<std::vector<std::uint8_t>> CertDerFromFile(const std::string& path) {
  FLEETID_TRY(text, ReadAll(path));
  if (text.find("-----BEGIN") == std::string::npos) {
    const std::span<const std::uint8_t> der(reinterpret_cast<const std::uint8_t*>(text.data()),
                                            text.size());
    FLEETID_TRY(cert, crypto::ParseCertificateDer(der));
    return crypto::CertificateDer(cert.get());
  }
  FLEETID_TRY(certs, crypto::ParseCertificatesPem(text));
  if (certs.size() != 1) {
    return MakeError(ErrorCode::kInvalidArgument, "'{}' holds {} certificates, not one", path,
                     certs.size());
  }
  return crypto::CertificateDer(certs.front().get());
}

}  // namespace fleetid::cli
