// testing/sanitizers.h: whether this test binary runs under AddressSanitizer (the asan preset).
#ifndef FLEETID_TESTING_SANITIZERS_H_
#define FLEETID_TESTING_SANITIZERS_H_

namespace fleetid::test {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

// Latency bounds are the dev build's promise (docs/security.md: answers within a second). Under
// ASan, with the slow unwinder recording every allocation's stack, the same work takes several
// times longer, and on a loaded machine a second is no longer a bound but a coin toss; tests that
// check a bound only to prove that a client was not left waiting for a timeout many times longer
// give the sanitizer build this factor.
inline constexpr int kSanitizerSlowdown = kSanitized ? 3 : 1;

}  // namespace fleetid::test

#endif  // FLEETID_TESTING_SANITIZERS_H_
