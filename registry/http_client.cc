// The Beast half of registry/http.h: the blocking client (tests, benchmarks,
// tools). Async operations run to completion on a private io_context so that
// every step has a deadline.
// Boost 1.74's asio/awaitable.hpp uses std::exchange without <utility>.
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <optional>

#include "registry/http.h"

namespace polis::registry {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
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

  beast::error_code RunUntilDone(bool& done) {
    ioc.restart();
    while (!done && ioc.run_one() > 0) {
    }
    return {};
  }

  Status Connect() {
    stream.emplace(ioc);
    buffer.clear();
    beast::error_code ec;
    const auto address = net::ip::make_address(host, ec);
    if (ec) return InvalidArgument("'{}' is not an IP address", host);
    bool done = false;
    beast::error_code result;
    stream->expires_after(std::chrono::milliseconds(timeout_ms));
    stream->async_connect(tcp::endpoint(address, static_cast<unsigned short>(port)),
                          [&](beast::error_code e) {
                            result = e;
                            done = true;
                          });
    RunUntilDone(done);
    if (result) {
      stream.reset();
      return RemoteError("cannot connect to {}:{}: {}", host, port, result.message());
    }
    return Status::Ok();
  }

  StatusOr<HttpResult> Once(http::request<http::string_body>& req) {
    bool done = false;
    beast::error_code result;
    stream->expires_after(std::chrono::milliseconds(timeout_ms));
    http::async_write(*stream, req, [&](beast::error_code e, std::size_t) {
      result = e;
      done = true;
    });
    RunUntilDone(done);
    if (result) return RemoteError("writing to {}:{}: {}", host, port, result.message());
    http::response_parser<http::string_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    done = false;
    stream->expires_after(std::chrono::milliseconds(timeout_ms));
    http::async_read(*stream, buffer, parser, [&](beast::error_code e, std::size_t) {
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

StatusOr<HttpResult> HttpClient::Request(const std::string& method, const std::string& target,
                                         const std::string& body,
                                         const std::vector<std::pair<std::string, std::string>>& headers) {
  http::request<http::string_body> req(http::string_to_verb(method), target, 11);
  req.set(http::field::host, impl_->host + ":" + std::to_string(impl_->port));
  req.set(http::field::user_agent, "polis-registry-client");
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

}  // namespace polis::registry
