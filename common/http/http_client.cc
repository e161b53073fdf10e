// The Beast half of common/http/http_client.h. Async operations run to
// completion on a private io_context so that every step has a deadline.
// Boost 1.74's asio/awaitable.hpp uses std::exchange without <utility>.
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
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
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// Why a failed TLS handshake failed, in one line with what to do about it.
std::string HandshakeError(SSL* ssl, const beast::error_code& ec, const std::string& where,
                           const std::string& host, const std::string& ca_file) {
  const long verify = SSL_get_verify_result(ssl);
  ERR_clear_error();
  if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH)
    return fmt::format("TLS certificate verification of {} failed: the certificate does not name '{}' "
                       "(connect with a name or address in its subjectAltName)", where, host);
  if (verify != X509_V_OK)
    return fmt::format("TLS certificate verification of {} failed: {} ({})", where,
                       X509_verify_cert_error_string(verify),
                       ca_file.empty()
                           ? "to trust a private CA, pass --cacert FILE or set POLIS_CA_FILE"
                           : fmt::format("it is not signed by a CA in '{}'", ca_file));
  return fmt::format("TLS handshake with {} failed: {} (is it an https port?)", where, ec.message());
}

}  // namespace

std::string CaFileOr(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* env = std::getenv("POLIS_CA_FILE");
  return env ? env : "";
}

std::string HttpResult::Header(const std::string& name) const {
  for (const auto& [k, v] : headers)
    if (beast::iequals(k, name)) return v;
  return "";
}

struct HttpClient::Impl {
  std::string host;
  int port = 0;
  int timeout_ms = 30000;
  ClientTls tls;
  net::io_context ioc;
  std::shared_ptr<ssl::context> ssl_ctx;  // made on the first TLS connect
  // At most one is set: the connection, plain or TLS.
  std::optional<beast::tcp_stream> stream;
  std::optional<TlsStream> tls_stream;
  beast::flat_buffer buffer;

  bool Connected() const { return stream.has_value() || tls_stream.has_value(); }
  void Drop() {
    stream.reset();
    tls_stream.reset();
  }
  beast::tcp_stream& Tcp() { return tls_stream ? beast::get_lowest_layer(*tls_stream) : *stream; }

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
    if (tls.enabled) return Handshake();
    return Status::Ok();
  }

  Status MakeSslContext() {
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                     ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    beast::error_code ec;
    if (tls.ca_file.empty()) {
      ctx->set_default_verify_paths(ec);
      if (ec) return IoError("cannot load the system's trusted CAs: {}", ec.message());
    } else {
      if (!std::ifstream(tls.ca_file))
        return IoError("cannot read the CA file '{}': {}", tls.ca_file, std::strerror(errno));
      ctx->load_verify_file(tls.ca_file, ec);
      if (ec) {
        ERR_clear_error();
        return InvalidArgument("the CA file '{}' holds no PEM certificate ({})", tls.ca_file, ec.message());
      }
    }
    ctx->set_verify_mode(ssl::verify_peer);
    ssl_ctx = std::move(ctx);
    return Status::Ok();
  }

  // Turns the connected TCP stream into a verified TLS one.
  Status Handshake() {
    if (!ssl_ctx) {
      if (Status st = MakeSslContext(); !st.ok()) {
        stream.reset();
        return st;
      }
    }
    tls_stream.emplace(std::move(*stream), *ssl_ctx);
    stream.reset();
    SSL* ssl = tls_stream->native_handle();
    beast::error_code not_ip;
    net::ip::make_address(host, not_ip);
    if (not_ip) {
      SSL_set_tlsext_host_name(ssl, host.c_str());  // SNI
      SSL_set1_host(ssl, host.c_str());
    } else {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
    }
    bool done = false;
    beast::error_code result;
    Tcp().expires_after(std::chrono::milliseconds(timeout_ms));
    tls_stream->async_handshake(ssl::stream_base::client, [&](beast::error_code e) {
      result = e;
      done = true;
    });
    RunUntilDone(done);
    if (!result) return Status::Ok();
    const std::string where = fmt::format("{}:{}", host, port);
    Status st = result == beast::error::timeout
                    ? Timeout("TLS handshake with {} did not finish within {} ms", where, timeout_ms)
                    : RemoteError("{}", HandshakeError(ssl, result, where, host, tls.ca_file));
    Drop();
    return st;
  }

  StatusOr<HttpResult> Once(bhttp::request<bhttp::string_body>& req) {
    return tls_stream ? OnceOn(*tls_stream, req) : OnceOn(*stream, req);
  }

  template <class Stream>
  StatusOr<HttpResult> OnceOn(Stream& s, bhttp::request<bhttp::string_body>& req) {
    bool done = false;
    beast::error_code result;
    Tcp().expires_after(std::chrono::milliseconds(timeout_ms));
    bhttp::async_write(s, req, [&](beast::error_code e, std::size_t) {
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
    Tcp().expires_after(std::chrono::milliseconds(timeout_ms));
    bhttp::async_read(s, buffer, parser, [&](beast::error_code e, std::size_t) {
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
    if (!res.keep_alive()) Drop();
    return out;
  }
};

HttpClient::HttpClient(std::string host, int port, int timeout_ms, ClientTls tls)
    : impl_(std::make_unique<Impl>()) {
  impl_->host = std::move(host);
  impl_->port = port;
  impl_->timeout_ms = timeout_ms;
  impl_->tls = std::move(tls);
}

HttpClient ClientFor(const HttpUrl& url, int timeout_ms, const std::string& ca_file) {
  return HttpClient(url.host, url.port, timeout_ms, ClientTls{url.https, ca_file});
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
    const bool reused = impl_->Connected();
    if (!reused) POLIS_RETURN_IF_ERROR(impl_->Connect());
    auto r = impl_->Once(req);
    if (r.ok()) return r;
    impl_->Drop();
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
  HttpUrl out;
  out.https = url.rfind("https://", 0) == 0;
  const std::string_view scheme = out.https ? "https://" : "http://";
  if (url.rfind(scheme, 0) != 0)
    return InvalidArgument("'{}' is not an http:// or https:// URL (expected http[s]://HOST:PORT)", url);
  if (out.https) out.port = 443;
  std::string rest = url.substr(scheme.size());
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
  out.text = fmt::format("{}{}{}{}:{}{}", scheme, v6 ? "[" : "", out.host, v6 ? "]" : "", out.port,
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
