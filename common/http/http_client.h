// A blocking HTTP/1.1 client for Polis's ops plane: the coordinator publishing
// to a registry, polisctl, tests and tools. Boost.Beast stays inside
// http_client.cc; callers see plain structs.
//
// Over TLS (ClientTls::enabled: an https:// URL) the server's certificate is
// verified against the system's trusted CAs, or only ca_file's when given,
// and must name the host (a DNS name or an IP address in its
// subjectAltName); a failed verification is a kRemote error saying why and
// how to trust a private CA.
//
// Every step (resolve, connect, handshake, write, read) has the client's deadline; a
// kept-alive connection the server has closed meanwhile is retried once on a
// fresh one. Errors are Status values naming the address: kRemote (refused,
// reset), kTimeout (no answer in time), kInvalidArgument (a bad URL).
//
// Thread-safety: an HttpClient is used by one thread at a time; the free
// functions are stateless.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace polis::http {

struct HttpResult {
  int status = 0;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string Header(const std::string& name) const;  // case-insensitive; "" if absent
};

struct ClientTls {
  bool enabled = false;
  std::string ca_file;  // PEM CA certificates to trust instead of the system's; "" = the system's
};

// The CA file a client trusts for https: `flag` (polisctl's --cacert) when
// given, else the environment's POLIS_CA_FILE, else "" (the system's CAs).
std::string CaFileOr(const std::string& flag);

class HttpClient {
 public:
  // `host` is an IP address or a name (resolved on connect).
  HttpClient(std::string host, int port, int timeout_ms = 30000, ClientTls tls = {});
  ~HttpClient();
  HttpClient(HttpClient&&) noexcept;
  HttpClient& operator=(HttpClient&&) noexcept;
  StatusOr<HttpResult> Request(const std::string& method, const std::string& target,
                               const std::string& body = "",
                               const std::vector<std::pair<std::string, std::string>>& headers = {});
  StatusOr<HttpResult> Get(const std::string& target) { return Request("GET", target); }
  StatusOr<HttpResult> Post(const std::string& target, const std::string& body) {
    return Request("POST", target, body, {{"Content-Type", "application/json"}});
  }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// "127.0.0.1:8000" -> host, port; "8000" -> 127.0.0.1, 8000.
StatusOr<std::pair<std::string, int>> ParseHostPort(const std::string& text);

// An http:// or https:// URL: "http[s]://HOST:PORT[/prefix]" (port 80 or
// 443 when absent; IPv6 in brackets). Other schemes are refused.
struct HttpUrl {
  bool https = false;
  std::string host;
  int port = 80;
  std::string base_path;  // "" or "/prefix" without a trailing slash
  std::string text;       // "http[s]://host:port/prefix", for messages
};
StatusOr<HttpUrl> ParseHttpUrl(const std::string& url);

// A client for `url`'s host and port, speaking TLS for https:// (trusting
// ca_file's CAs when not "", see CaFileOr).
HttpClient ClientFor(const HttpUrl& url, int timeout_ms, const std::string& ca_file = "");

// Percent-encodes everything but unreserved characters (RFC 3986), for a
// path segment or a query value.
std::string UrlEncode(const std::string& s);

// The "error" of a JSON error body ({"error": "..."}), else the body's first
// 200 bytes.
std::string ErrorMessage(const HttpResult& r);

}  // namespace polis::http
