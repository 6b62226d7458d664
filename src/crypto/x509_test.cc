// The X.509 toolkit against certificates OpenSSL makes in the test: strict DER and PEM parsing,
// encoding round trips, the stored serial form and Unix-seconds conversions on both sides of 1970
// and 2050.
#include "crypto/x509.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>

namespace fleetid::crypto {
namespace {

// MakeCert is a self-signed P-256 certificate with |serial| (set from its big-endian magnitude,
// negative when |negative|) valid from |not_before| to |not_after| (Unix seconds).
X509Ptr MakeCert(std::vector<std::uint8_t> serial, bool negative, std::int64_t not_before,
                 std::int64_t not_after) {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  X509Ptr cert(X509_new());
  BignumPtr bn(BN_bin2bn(serial.data(), static_cast<int>(serial.size()), nullptr));
  BN_set_negative(bn.get(), negative ? 1 : 0);
  Asn1IntegerPtr asn1_serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  X509NamePtr name(X509_NAME_new());
  X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("x509-test"), -1, -1, 0);
  auto nb = UnixToAsn1Time(not_before);
  auto na = UnixToAsn1Time(not_after);
  if (!nb.has_value() || !na.has_value()) return nullptr;
  if (X509_set_version(cert.get(), 2) != 1 ||
      X509_set_serialNumber(cert.get(), asn1_serial.get()) != 1 ||
      X509_set_subject_name(cert.get(), name.get()) != 1 ||
      X509_set_issuer_name(cert.get(), name.get()) != 1 ||
      X509_set1_notBefore(cert.get(), nb->get()) != 1 ||
      X509_set1_notAfter(cert.get(), na->get()) != 1 || X509_set_pubkey(cert.get(), key.get()) != 1 ||
      X509_sign(cert.get(), key.get(), EVP_sha256()) <= 0) {
    return nullptr;
  }
  return cert;
}

X509Ptr MakeCert() { return MakeCert({0x01, 0x02}, false, 1'700'000'000, 1'800'000'000); }

std::vector<std::uint8_t> DerOf(const X509Ptr& cert) {
  auto der = CertificateDer(cert.get());
  return der.has_value() ? *der : std::vector<std::uint8_t>();
}

std::string PemOf(const X509Ptr& cert) {
  auto pem = CertificatePem(cert.get());
  return pem.has_value() ? *pem : std::string();
}

TEST(X509Der, RoundTrips) {
  X509Ptr cert = MakeCert();
  ASSERT_NE(cert, nullptr);
  const std::vector<std::uint8_t> der = DerOf(cert);
  ASSERT_FALSE(der.empty());
  auto parsed = ParseCertificateDer(der);
  if (!parsed.has_value()) GTEST_FAIL() << parsed.error().ToString();
  EXPECT_EQ(X509_cmp(parsed->get(), cert.get()), 0);
  EXPECT_EQ(DerOf(*parsed), der);
}

TEST(X509Der, RefusesTrailingBytes) {
  std::vector<std::uint8_t> der = DerOf(MakeCert());
  der.push_back(0x00);
  auto parsed = ParseCertificateDer(der);
  ASSERT_FALSE(parsed.has_value());
  EXPECT_EQ(parsed.error().code(), ErrorCode::kInvalidArgument);
}

TEST(X509Der, RefusesTruncatedEmptyAndGarbage) {
  const std::vector<std::uint8_t> der = DerOf(MakeCert());
  ASSERT_GT(der.size(), 10U);
  const std::vector<std::uint8_t> truncated(der.begin(), der.end() - 1);
  const std::vector<std::uint8_t> garbage{0x30, 0x03, 0x02, 0x01, 0x01};
  for (const auto& input : {truncated, std::vector<std::uint8_t>(), garbage}) {
    auto parsed = ParseCertificateDer(input);
    ASSERT_FALSE(parsed.has_value());
    EXPECT_EQ(parsed.error().code(), ErrorCode::kInvalidArgument);
  }
}

TEST(X509Der, RefusesOversizedInput) {
  std::vector<std::uint8_t> der = DerOf(MakeCert());
  der.resize(kMaxCertificateDer + 1, 0x00);
  auto parsed = ParseCertificateDer(der);
  ASSERT_FALSE(parsed.has_value());
  EXPECT_EQ(parsed.error().code(), ErrorCode::kInvalidArgument);
}

TEST(X509Der, EncodingNullIsInternal) {
  auto der = CertificateDer(nullptr);
  ASSERT_FALSE(der.has_value());
  EXPECT_EQ(der.error().code(), ErrorCode::kInternal);
}

TEST(X509Pem, ParsesOneAndSeveralWithSurroundingWhitespace) {
  X509Ptr a = MakeCert();
  X509Ptr b = MakeCert({0x7f}, false, 0, 1'000);
  ASSERT_NE(b, nullptr);
  auto one = ParseCertificatesPem(PemOf(a));
  if (!one.has_value()) GTEST_FAIL() << one.error().ToString();
  ASSERT_EQ(one->size(), 1U);
  EXPECT_EQ(X509_cmp(one->front().get(), a.get()), 0);

  auto two = ParseCertificatesPem("\n  " + PemOf(a) + "\r\n\n" + PemOf(b) + "\n\n");
  if (!two.has_value()) GTEST_FAIL() << two.error().ToString();
  ASSERT_EQ(two->size(), 2U);
  EXPECT_EQ(X509_cmp((*two)[1].get(), b.get()), 0);
}

TEST(X509Pem, RefusesJunkEmptyAndOtherLabels) {
  const std::string pem = PemOf(MakeCert());
  ASSERT_FALSE(pem.empty());
  std::string bad_base64 = pem;
  bad_base64[40] = '*';
  const std::string key_label = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
  for (const std::string& input :
       {std::string(), std::string("  \n"), "subject=CN = x\n" + pem, pem + "trailing words\n",
        pem + pem.substr(0, pem.size() / 2), bad_base64, key_label,
        std::string("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")}) {
    auto parsed = ParseCertificatesPem(input);
    ASSERT_FALSE(parsed.has_value()) << input;
    EXPECT_EQ(parsed.error().code(), ErrorCode::kInvalidArgument);
  }
}

TEST(X509Pem, RefusesBlockWithTrailingDer) {
  std::vector<std::uint8_t> der = DerOf(MakeCert());
  der.push_back(0x00);
  BioPtr bio(BIO_new(BIO_s_mem()));
  ASSERT_GT(PEM_write_bio(bio.get(), "CERTIFICATE", "", der.data(), static_cast<long>(der.size())),
            0);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  auto parsed = ParseCertificatesPem(std::string_view(data, static_cast<std::size_t>(n)));
  ASSERT_FALSE(parsed.has_value());
  EXPECT_EQ(parsed.error().code(), ErrorCode::kInvalidArgument);
}

TEST(X509Serial, IsLowerHexOfTheMagnitudeWithoutPadding) {
  X509Ptr cert = MakeCert({0x8f, 0x01}, false, 0, 1);
  ASSERT_NE(cert, nullptr);
  // DER 02 03 00 8f 01: the leading zero byte only keeps the INTEGER positive.
  auto serial = SerialHex(X509_get0_serialNumber(cert.get()));
  if (!serial.has_value()) GTEST_FAIL() << serial.error().ToString();
  EXPECT_EQ(*serial, "8f01");

  X509Ptr small = MakeCert({0x0a}, false, 0, 1);
  auto small_serial = SerialHex(X509_get0_serialNumber(small.get()));
  if (!small_serial.has_value()) GTEST_FAIL() << small_serial.error().ToString();
  EXPECT_EQ(*small_serial, "0a");
}

TEST(X509Serial, RefusesNegativeAndZero) {
  X509Ptr negative = MakeCert({0x05}, true, 0, 1);
  ASSERT_NE(negative, nullptr);
  auto parsed = ParseCertificateDer(DerOf(negative));
  if (!parsed.has_value()) GTEST_FAIL() << parsed.error().ToString();
  auto serial = SerialHex(X509_get0_serialNumber(parsed->get()));
  ASSERT_FALSE(serial.has_value());
  EXPECT_EQ(serial.error().code(), ErrorCode::kInvalidArgument);

  Asn1IntegerPtr zero(ASN1_INTEGER_new());
  ASSERT_EQ(ASN1_INTEGER_set(zero.get(), 0), 1);
  auto zero_serial = SerialHex(zero.get());
  ASSERT_FALSE(zero_serial.has_value());
  EXPECT_EQ(zero_serial.error().code(), ErrorCode::kInvalidArgument);
}

TEST(X509Time, RoundTripsAcrossTheEpochAnd2050) {
  // 1949-12-31T23:59:59Z (GeneralizedTime), 1969-12-31T23:59:59Z, the epoch,
  // 2049-12-31T23:59:59Z (the last UTCTime), 2050-01-01T00:00:00Z, 9999-12-31T23:59:59Z.
  const std::pair<std::int64_t, int> cases[] = {
      {-631152001, V_ASN1_GENERALIZEDTIME}, {-1, V_ASN1_UTCTIME},
      {0, V_ASN1_UTCTIME},                  {2524607999, V_ASN1_UTCTIME},
      {2524608000, V_ASN1_GENERALIZEDTIME}, {253402300799, V_ASN1_GENERALIZEDTIME}};
  for (const auto& [seconds, type] : cases) {
    auto time = UnixToAsn1Time(seconds);
    if (!time.has_value()) GTEST_FAIL() << seconds << ": " << time.error().ToString();
    EXPECT_EQ(ASN1_STRING_type(time->get()), type) << seconds;
    auto back = Asn1TimeToUnix(time->get());
    if (!back.has_value()) GTEST_FAIL() << seconds << ": " << back.error().ToString();
    EXPECT_EQ(*back, seconds);
  }
}

TEST(X509Time, ReadsACertificatesValidity) {
  X509Ptr cert = MakeCert({0x01}, false, -86400, 2524608000 + 86400);
  ASSERT_NE(cert, nullptr);
  auto parsed = ParseCertificateDer(DerOf(cert));
  if (!parsed.has_value()) GTEST_FAIL() << parsed.error().ToString();
  auto not_before = Asn1TimeToUnix(X509_get0_notBefore(parsed->get()));
  auto not_after = Asn1TimeToUnix(X509_get0_notAfter(parsed->get()));
  if (!not_before.has_value() || !not_after.has_value()) GTEST_FAIL();
  EXPECT_EQ(*not_before, -86400);
  EXPECT_EQ(*not_after, 2524608000 + 86400);
}

TEST(X509Time, RefusesMalformedAndOutOfRange) {
  Asn1TimePtr bad(ASN1_STRING_type_new(V_ASN1_UTCTIME));
  ASSERT_EQ(ASN1_STRING_set(bad.get(), "241330120000Z", -1), 1);
  auto read = Asn1TimeToUnix(bad.get());
  ASSERT_FALSE(read.has_value());
  EXPECT_EQ(read.error().code(), ErrorCode::kInvalidArgument);
  auto null_time = Asn1TimeToUnix(nullptr);
  ASSERT_FALSE(null_time.has_value());
  EXPECT_EQ(null_time.error().code(), ErrorCode::kInvalidArgument);

  auto too_late = UnixToAsn1Time(253402300800);  // 10000-01-01T00:00:00Z
  ASSERT_FALSE(too_late.has_value());
  EXPECT_EQ(too_late.error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace fleetid::crypto
