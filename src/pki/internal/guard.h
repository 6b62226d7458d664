// Included first by every header under src/pki/internal/: they are the CA's internals, built into
// fleetid::pki only. That target (and pki_test) define FLEETID_PKI_INTERNAL privately, so another
// component that includes one of these headers fails to compile; pki/pki.h is the public API.
#ifndef FLEETID_PKI_INTERNAL_GUARD_H_
#define FLEETID_PKI_INTERNAL_GUARD_H_

#ifndef FLEETID_PKI_INTERNAL
#error "src/pki/internal/ is private to fleetid::pki: include pki/pki.h instead"
#endif

#endif  // FLEETID_PKI_INTERNAL_GUARD_H_
