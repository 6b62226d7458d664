// Included first by every header under src/server/internal/: they are the server's internals,
// built into fleetid::server only. That target (and its tests) define FLEETID_SERVER_INTERNAL
// privately, so another component that includes one of these headers fails to compile;
// server/http_server.h and server/http_text.h are the public API.
#ifndef FLEETID_SERVER_INTERNAL_GUARD_H_
#define FLEETID_SERVER_INTERNAL_GUARD_H_

#ifndef FLEETID_SERVER_INTERNAL
#error "src/server/internal/ is private to fleetid::server: include server/http_server.h instead"
#endif

#endif  // FLEETID_SERVER_INTERNAL_GUARD_H_
