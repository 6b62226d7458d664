// HTTP/1.1 text helpers shared by the server (src/server) and the agent's client
// (src/agent/https_client.cc): ASCII case folding, RFC 9110 tokens, header value checks and the
// IMF-fixdate. Library fleetid::http_text, which depends on fleetid::common only, so the agent
// uses it without the server's sessions.
#ifndef FLEETID_SERVER_HTTP_TEXT_H_
#define FLEETID_SERVER_HTTP_TEXT_H_

#include <chrono>
#include <string>
#include <string_view>

namespace fleetid::server {

// AsciiLower folds A-Z only (header names and schemes are ASCII; no locale).
char AsciiLower(char c);
std::string AsciiLower(std::string_view s);

// EqualsIgnoreCase compares two ASCII strings ignoring A-Z case.
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

// IsToken is true for a non-empty RFC 9110 §5.6.2 token: a method or a header name.
bool IsToken(std::string_view s);

// IsSafeHeaderValue is false if |s| holds CR, LF or NUL, which would split or end a header.
bool IsSafeHeaderValue(std::string_view s);

// HttpDate formats |t| as an IMF-fixdate (RFC 9110 §5.6.7), e.g. "Sun, 06 Nov 1994 08:49:37 GMT";
// CurrentHttpDate is now's, formatted at most once a second per thread.
std::string HttpDate(std::chrono::system_clock::time_point t);
std::string_view CurrentHttpDate();

}  // namespace fleetid::server

#endif  // FLEETID_SERVER_HTTP_TEXT_H_
