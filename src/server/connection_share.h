// fleetid::server::internal::ShareKey: which connections count as one client's against
// HttpServerOptions::max_connections_per_address. Internal to the server component.
#ifndef FLEETID_SERVER_CONNECTION_SHARE_H_
#define FLEETID_SERVER_CONNECTION_SHARE_H_

#include <string>
#include <string_view>

namespace fleetid::server::internal {

// ShareKey returns the key under which a connection from |address| (a numeric IPv4 or IPv6
// address, without port or brackets) counts against the per-address share: the IPv4 address
// itself ("192.0.2.7"), also for an IPv4-mapped IPv6 address ("::ffff:192.0.2.7"), and for any
// other IPv6 address its /64 prefix ("2001:db8:1:2::/64"), because one host is routinely given a
// whole /64 (RFC 7421) and could otherwise open connections from 2^64 addresses. Text that is not
// an address is returned unchanged.
std::string ShareKey(std::string_view address);

}  // namespace fleetid::server::internal

#endif  // FLEETID_SERVER_CONNECTION_SHARE_H_
