// The HTTP pieces Polis writes itself (common/http/): ParseHostPort,
// ParseHttpUrl, UrlEncode, ErrorMessage (the client's reading of an error
// body), and the request-header handling of HttpServer: Boost.Beast's
// request parser under the server's settings (16 KiB header limit; no body
// limit while the header is read, then the declared Content-Length checked
// against the body limit before the body is read), with the header fields
// the server copies into HttpRequest, and the registry's reading of the
// request target (ParseTarget, PercentDecode).
//
// Input: one mode byte, then the text. Mode bits 0-1 choose the function:
// 0 ParseHostPort, 1 ParseHttpUrl, 2 UrlEncode, 3 a raw request (and the
// text as a response body for ErrorMessage).
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <cctype>
#include <limits>
#include <optional>

#include "common/http/http_client.h"
#include "common/http/request_target.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

namespace bhttp = boost::beast::http;

constexpr size_t kMaxHeaderBytes = 16u << 10;  // HttpServerOptions defaults
constexpr size_t kMaxBodyBytes = 8u << 20;

int Hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void Request(std::string_view raw) {
  bhttp::request_parser<bhttp::string_body> parser;
  parser.header_limit(static_cast<std::uint32_t>(kMaxHeaderBytes));
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  parser.eager(false);
  boost::beast::error_code ec;
  size_t at = 0;
  while (!parser.is_header_done()) {
    const size_t used = parser.put(boost::asio::buffer(raw.data() + at, raw.size() - at), ec);
    if (ec == bhttp::error::need_more || (!ec && used == 0)) return;  // the server waits for more
    if (ec) return;  // 431 or 400
    at += used;
  }
  const auto& req = parser.get();
  const std::string method(req.method_string());
  const std::string target(req.target());
  // The registry's router reads the target first.
  auto parsed = polis::http::ParseTarget(target);
  if (parsed.ok())
    for (const auto& seg : parsed->seg) POLIS_FUZZ_CHECK(!seg.empty());
  const auto declared = parser.content_length();
  if (declared && *declared > kMaxBodyBytes) return;  // 413
  parser.body_limit(kMaxBodyBytes);
  parser.eager(true);
  while (!parser.is_done() && at < raw.size()) {
    const size_t used = parser.put(boost::asio::buffer(raw.data() + at, raw.size() - at), ec);
    if (ec == bhttp::error::need_more) break;
    if (ec) return;  // 413 or 400
    at += used;
    if (used == 0) break;
  }
  if (!parser.is_done()) return;
  auto done = parser.release();
  POLIS_FUZZ_CHECK(done.body().size() <= kMaxBodyBytes);
  if (declared) POLIS_FUZZ_CHECK(done.body().size() == *declared);
  const std::string authorization(done[bhttp::field::authorization]);
  const std::string header_length(done["Inference-Header-Content-Length"]);
  (void)done.keep_alive();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace polis;
  if (size < 1) return 0;
  const std::string text(fuzz::AsView(data + 1, size - 1));
  switch (data[0] & 3) {
    case 0: {
      auto hp = http::ParseHostPort(text);
      if (hp.ok()) POLIS_FUZZ_CHECK(hp->second >= 0 && hp->second <= 65535);
      return 0;
    }
    case 1: {
      auto url = http::ParseHttpUrl(text);
      if (!url.ok()) return 0;
      POLIS_FUZZ_CHECK(url->port >= 1 && url->port <= 65535 && !url->host.empty());
      // The normalised form names the same place.
      auto again = http::ParseHttpUrl(url->text);
      POLIS_FUZZ_CHECK(again.ok() && again->https == url->https && again->host == url->host &&
                       again->port == url->port && again->base_path == url->base_path);
      return 0;
    }
    case 2: {
      const std::string enc = http::UrlEncode(text);
      std::string dec;
      for (size_t i = 0; i < enc.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(enc[i]);
        if (c == '%') {
          POLIS_FUZZ_CHECK(i + 2 < enc.size() && Hex(enc[i + 1]) >= 0 && Hex(enc[i + 2]) >= 0);
          dec.push_back(static_cast<char>(Hex(enc[i + 1]) * 16 + Hex(enc[i + 2])));
          i += 2;
        } else {
          POLIS_FUZZ_CHECK(std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~');
          dec.push_back(static_cast<char>(c));
        }
      }
      POLIS_FUZZ_CHECK(dec == text);
      // What UrlEncode makes, the router decodes back: as a path segment
      // and as a query value.
      auto t = http::ParseTarget("/m/" + enc + "?k=" + enc);
      POLIS_FUZZ_CHECK(t.ok());
      POLIS_FUZZ_CHECK(t->seg.size() == (text.empty() ? 1u : 2u) && t->seg[0] == "m");
      if (!text.empty()) POLIS_FUZZ_CHECK(t->seg[1] == text);
      POLIS_FUZZ_CHECK(t->Query("k") == text);
      return 0;
    }
    default: {
      Request(text);
      http::HttpResult r;
      r.status = 400;
      r.body = text;
      http::ErrorMessage(r);
      return 0;
    }
  }
}
