// The Beast half of common/http/http_client.h. Async operations run to
// completion on a private io_context so that every step has a deadline.
// Boost 1.74's asio/awaitable.hpp uses std::exchange without <utility>.
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <cctype>
#include <cstdlib>
#include <limits>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/echo.h"
#include "common/http/http_client.h"

namespace polis::http {
namespace {

namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

}  // namespace

std::string HttpResult::Header(const std::string& name) const {
  for (const auto& [k, v] : headers)
    if (beast::iequals(k, name)) return v;
  return "";
}

struct HttpClient::Impl {
  std::string host;
  int port = 0;
  int timeout_ms = 30000;
  net::io_context ioc;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;

  void RunUntilDone(bool& done) {
    ioc.restart();
    while (!done && ioc.run_one() > 0) {
    }
  }

  StatusOr<std::vector<tcp::endpoint>> Resolve() {
    beast::error_code ec;
    const auto address = net::ip::make_address(host, ec);
    if (!ec) return std::vector<tcp::endpoint>{tcp::endpoint(address, static_cast<unsigned short>(port))};
    // A name: resolve it under the deadline.
    tcp::resolver resolver(ioc);
    net::steady_timer timer(ioc);
    bool done = false, timed_out = false;
    std::vector<tcp::endpoint> out;
    beast::error_code result;
    timer.expires_after(std::chrono::milliseconds(timeout_ms));
    timer.async_wait([&](beast::error_code e) {
      if (!e && !done) {
        timed_out = true;
        resolver.cancel();
      }
    });
    resolver.async_resolve(host, std::to_string(port),
                           [&](beast::error_code e, tcp::resolver::results_type r) {
                             result = e;
                             for (const auto& entry : r) out.push_back(entry.endpoint());
                             done = true;
                             timer.cancel();
                           });
    ioc.restart();
    ioc.run();
    if (timed_out) return Timeout("cannot resolve '{}' within {} ms", host, timeout_ms);
    if (result || out.empty())
      return RemoteError("cannot resolve '{}': {}", host, result ? result.message() : "no address");
    return out;
  }

  Status Connect() {
    POLIS_ASSIGN_OR_RETURN(std::vector<tcp::endpoint> endpoints, Resolve());
    stream.emplace(ioc);
    buffer.clear();
    bool done = false;
    beast::error_code result;
    stream->expires_after(std::chrono::milliseconds(timeout_ms));
    stream->async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) {
      result = e;
      done = true;
    });
    RunUntilDone(done);
    if (result) {
      stream.reset();
      if (result == beast::error::timeout)
        return Timeout("cannot connect to {}:{} within {} ms", host, port, timeout_ms);
      return RemoteError("cannot connect to {}:{}: {}", host, port, result.message());
    }
    return Status::Ok();
  }

  StatusOr<HttpResult> Once(bhttp::request<bhttp::string_body>& req) {
    bool done = false;
    beast::error_code result;
    stream->expires_after(std::chrono::milliseconds(timeout_ms));
    bhttp::async_write(*stream, req, [&](beast::error_code e, std::size_t) {
      result = e;
      done = true;
    });
    RunUntilDone(done);
    if (result == beast::error::timeout)
      return Timeout("sending to {}:{} did not finish within {} ms", host, port, timeout_ms);
    if (result) return RemoteError("writing to {}:{}: {}", host, port, result.message());
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    done = false;
    stream->expires_after(std::chrono::milliseconds(timeout_ms));
    bhttp::async_read(*stream, buffer, parser, [&](beast::error_code e, std::size_t) {
      result = e;
      done = true;
    });
    RunUntilDone(done);
    if (result == beast::error::timeout)
      return Timeout("no response from {}:{} within {} ms", host, port, timeout_ms);
    if (result) return RemoteError("reading from {}:{}: {}", host, port, result.message());
    auto res = parser.release();
    HttpResult out;
    out.status = static_cast<int>(res.result_int());
    out.body = std::move(res.body());
    for (const auto& f : res) out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    if (!res.keep_alive()) stream.reset();
    return out;
  }
};

HttpClient::HttpClient(std::string host, int port, int timeout_ms) : impl_(std::make_unique<Impl>()) {
  impl_->host = std::move(host);
  impl_->port = port;
  impl_->timeout_ms = timeout_ms;
}

HttpClient::~HttpClient() = default;
HttpClient::HttpClient(HttpClient&&) noexcept = default;
HttpClient& HttpClient::operator=(HttpClient&&) noexcept = default;

StatusOr<HttpResult> HttpClient::Request(const std::string& method, const std::string& target,
                                         const std::string& body,
                                         const std::vector<std::pair<std::string, std::string>>& headers) {
  bhttp::request<bhttp::string_body> req(bhttp::string_to_verb(method), target, 11);
  req.set(bhttp::field::host, impl_->host + ":" + std::to_string(impl_->port));
  req.set(bhttp::field::user_agent, "polis-http-client");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  req.keep_alive(true);
  req.prepare_payload();
  // A kept-alive connection the server closed meanwhile fails on first use:
  // retry once on a fresh one.
  for (int attempt = 0;; ++attempt) {
    const bool reused = impl_->stream.has_value();
    if (!reused) POLIS_RETURN_IF_ERROR(impl_->Connect());
    auto r = impl_->Once(req);
    if (r.ok()) return r;
    impl_->stream.reset();
    if (!reused || attempt > 0 || r.status().code() == Code::kTimeout) return r.status();
  }
}

StatusOr<std::pair<std::string, int>> ParseHostPort(const std::string& text) {
  std::string host = "127.0.0.1", port = text;
  const size_t colon = text.rfind(':');
  if (colon != std::string::npos) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
      host = host.substr(1, host.size() - 2);
  }
  char* end = nullptr;
  const long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p < 0 || p > 65535)
    return InvalidArgument("'{}' is not HOST:PORT (port 0..65535)", text);
  return std::make_pair(host, static_cast<int>(p));
}

StatusOr<HttpUrl> ParseHttpUrl(const std::string& url) {
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0)
    return InvalidArgument("'{}' is not an http:// URL (expected http://HOST:PORT; https is not spoken)",
                           url);
  std::string rest = url.substr(kScheme.size());
  HttpUrl out;
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) out.base_path = rest.substr(slash);
  while (!out.base_path.empty() && out.base_path.back() == '/') out.base_path.pop_back();
  if (out.base_path.find_first_of("?#") != std::string::npos)
    return InvalidArgument("'{}': a registry URL takes no query or fragment", url);
  std::string port;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string::npos) return InvalidArgument("'{}' has an unclosed '['", url);
    out.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return InvalidArgument("'{}': expected ':' after ']'", url);
      port = authority.substr(close + 2);
    }
  } else {
    const size_t colon = authority.rfind(':');
    out.host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  if (out.host.empty()) return InvalidArgument("'{}' names no host (expected http://HOST:PORT)", url);
  // A host is a name or an address: no blanks, control bytes or URL
  // delimiters, and a ':' only inside brackets (IPv6), so that `text`
  // names the same host and port when it is parsed again.
  const bool bracketed = authority.front() == '[';
  for (unsigned char c : out.host) {
    constexpr std::string_view kDelimiters = "[]@?#\\\"<>^`{|}";
    if (c == ':' && !bracketed)
      return InvalidArgument("'{}': an IPv6 host goes in brackets (http://[::1]:8000)", EchoValue(url));
    if (c <= 0x20 || c >= 0x7f || kDelimiters.find(static_cast<char>(c)) != std::string_view::npos)
      return InvalidArgument("'{}': the host holds byte 0x{:02x}, which a host name or address "
                             "cannot hold", EchoValue(url), c);
  }
  if (!port.empty()) {
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(port) == 0 || std::stoi(port) > 65535)
      return InvalidArgument("'{}': port '{}' is not a number in 1..65535", url, port);
    out.port = std::stoi(port);
  }
  const bool v6 = out.host.find(':') != std::string::npos;
  out.text = fmt::format("http://{}{}{}:{}{}", v6 ? "[" : "", out.host, v6 ? "]" : "", out.port,
                         out.base_path);
  return out;
}

std::string UrlEncode(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string ErrorMessage(const HttpResult& r) {
  auto doc = nlohmann::json::parse(r.body, nullptr, false);
  if (doc.is_object() && doc.contains("error") && doc["error"].is_string())
    return doc["error"].get<std::string>();
  return r.body.substr(0, 200);
}

}  // namespace polis::http
