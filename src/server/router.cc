// HttpRequest, HttpResponse and Router: the request and answer types Handlers see, and the routing
// of a request to its Handler.
#include <fmt/core.h>

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>

#include "server/http_server.h"
#include "server/http_text.h"

namespace fleetid::server {

std::string_view HttpRequest::Header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (EqualsIgnoreCase(key, name)) return value;
  }
  return {};
}

HttpResponse HttpResponse::Json(int status, std::string body) {
  HttpResponse response;
  response.status = status;
  response.body = std::move(body);
  return response;
}

HttpResponse HttpResponse::JsonError(int status, std::string_view error_name,
                                     std::string_view message) {
  const nlohmann::json body = {{"error", std::string(error_name)},
                               {"message", std::string(message)}};
  return Json(status, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

HttpResponse HttpResponse::FromError(const fleetid::Error& error) {
  return JsonError(HttpStatus(error.code()), ErrorCodeName(error.code()), error.message());
}

void Router::Add(std::string method, std::string pattern, Handler handler) {
  Route route{
      .method = std::move(method), .pattern = std::move(pattern), .handler = std::move(handler)};
  if (route.pattern.ends_with("/*")) {
    route.pattern.pop_back();
    route.is_prefix = true;
  }
  routes_.push_back(std::move(route));
}

HttpResponse Router::Dispatch(const HttpRequest& request) const {
  const Route* best = nullptr;
  std::size_t best_rank = 0;
  bool path_known = false;
  std::vector<std::string> allowed;

  for (const Route& route : routes_) {
    const bool matches =
        route.is_prefix ? request.path.starts_with(route.pattern) : request.path == route.pattern;
    if (!matches) continue;
    path_known = true;
    allowed.push_back(route.method);
    if (route.method == "GET") allowed.emplace_back("HEAD");

    const bool exact_method = route.method == request.method;
    const bool head_via_get = request.method == "HEAD" && route.method == "GET";
    if (!exact_method && !head_via_get) continue;
    // Rank: exact paths above every prefix, longer prefixes above shorter ones, and at equal
    // specificity an explicit HEAD route above GET answering HEAD.
    std::size_t rank =
        route.is_prefix ? route.pattern.size() * 2 : std::numeric_limits<std::size_t>::max() - 1;
    if (exact_method) ++rank;
    if (best == nullptr || rank > best_rank) {
      best = &route;
      best_rank = rank;
    }
  }

  if (best != nullptr) return best->handler(request);
  if (!path_known) {
    return HttpResponse::JsonError(404, "not_found", fmt::format("no route for {}", request.path));
  }
  std::sort(allowed.begin(), allowed.end());
  allowed.erase(std::unique(allowed.begin(), allowed.end()), allowed.end());
  std::string allow;
  for (const std::string& method : allowed) {
    if (!allow.empty()) allow += ", ";
    allow += method;
  }
  HttpResponse response = HttpResponse::JsonError(
      405, "method_not_allowed", fmt::format("{} is not allowed here", request.method));
  response.headers.emplace_back("Allow", std::move(allow));
  return response;
}

}  // namespace fleetid::server
