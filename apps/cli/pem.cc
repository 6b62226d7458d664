#include "apps/cli/pem.h"

#include <openssl/pem.h>

#include "apps/cli/cli.h"
#include "crypto/crypto.h"
#include "enroll/factory.h"

namespace fleetid::cli {

std::string CertPem(std::span<const std::uint8_t> der) {
  const unsigned char* p = der.data();
  crypto::X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  crypto::BioPtr bio(BIO_new(BIO_s_mem()));
  if (!cert || !bio || PEM_write_bio_X509(bio.get(), cert.get()) != 1) return {};
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
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
  crypto::BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
  crypto::X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    cert.reset(d2i_X509(nullptr, &p, static_cast<long>(text.size())));
  }
  if (!cert) return MakeError(ErrorCode::kInvalidArgument, "'{}' is not a certificate", path);
  return enroll::CertificateDer(cert.get());
}

}  // namespace fleetid::cli
