// Helpers shared by the harnesses (tests/fuzz/*_fuzzer.cc): a scratch
// directory for parsers that read a path, a checksum re-stamp so mutated
// framed files get past the SHA-256 to the parsing behind it, and a check
// that aborts (a finding) when a parser breaks its own contract.
// Harnesses run single-threaded; so do these.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <unistd.h>
#include <zlib.h>

#include "common/fs.h"

namespace polis::fuzz {

// A broken contract is a finding: print it and abort, as a sanitizer would.
#define POLIS_FUZZ_CHECK(cond)                                                         \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

// This process's scratch directory (under $TMPDIR, else /tmp), removed at exit.
inline const std::string& ScratchDir() {
  static const std::string dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/polis-fuzz-XXXXXX";
    POLIS_FUZZ_CHECK(mkdtemp(templ.data()) != nullptr);
    static std::string keep;
    keep = templ;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(keep, ec);
    });
    return templ;
  }();
  return dir;
}

// Writes `bytes` to ScratchDir()/name (replacing it) and returns the path.
inline std::string WriteScratch(const std::string& name, std::string_view bytes) {
  const std::string path = ScratchDir() + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  POLIS_FUZZ_CHECK(f != nullptr);
  POLIS_FUZZ_CHECK(bytes.empty() || std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size());
  POLIS_FUZZ_CHECK(std::fclose(f) == 0);
  return path;
}

// `framed` with its last 32 bytes replaced by the raw SHA-256 of the bytes
// before them (the framing of common/artifact/artifact.h); shorter inputs
// are returned as they are.
inline std::string Restamp(std::string_view framed) {
  constexpr size_t kChecksum = 32;
  std::string out(framed);
  if (out.size() < kChecksum) return out;
  const std::string hex = Sha256Hex(std::string_view(out).substr(0, out.size() - kChecksum));
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  for (size_t i = 0; i < kChecksum; ++i)
    out[out.size() - kChecksum + i] = static_cast<char>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));
  return out;
}

// `raw` as one gzip member (what gzip(1) writes).
inline std::string Gzip(std::string_view raw) {
  z_stream zs{};
  POLIS_FUZZ_CHECK(deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&zs, raw.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  zs.avail_in = static_cast<uInt>(raw.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  POLIS_FUZZ_CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

inline std::string_view AsView(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace polis::fuzz
