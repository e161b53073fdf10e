#include "common/privacy/secagg.h"

#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <algorithm>
#include <cmath>

namespace polis::privacy {
namespace {

using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)>;

PkeyCtx NewCtx(EVP_PKEY* key, int id) {
  return PkeyCtx(key ? EVP_PKEY_CTX_new(key, nullptr) : EVP_PKEY_CTX_new_id(id, nullptr),
                 &EVP_PKEY_CTX_free);
}

}  // namespace

void KeyPair::Free::operator()(evp_pkey_st* p) const { EVP_PKEY_free(p); }

StatusOr<KeyPair> KeyPair::Generate() {
  PkeyCtx ctx = NewCtx(nullptr, EVP_PKEY_X25519);
  EVP_PKEY* raw = nullptr;
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 || EVP_PKEY_keygen(ctx.get(), &raw) != 1)
    return InternalError("OpenSSL could not generate an X25519 key pair");
  KeyPair kp;
  kp.pkey_.reset(raw, Free());
  size_t len = kp.public_.size();
  if (EVP_PKEY_get_raw_public_key(raw, kp.public_.data(), &len) != 1 || len != 32)
    return InternalError("OpenSSL could not export the X25519 public key");
  return kp;
}

StatusOr<Key256> AgreeSeed(const KeyPair& mine, const PublicKey& peer, uint32_t my_index,
                           uint32_t peer_index, std::string_view session) {
  if (my_index == peer_index) return InvalidArgument("secure aggregation: a worker has no pair seed with itself");
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> peer_key(
      EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer.data(), peer.size()), &EVP_PKEY_free);
  if (!peer_key) return InvalidArgument("secure aggregation: worker {}'s public key is not an X25519 key", peer_index);
  PkeyCtx ctx = NewCtx(mine.pkey(), 0);
  uint8_t shared[32];
  size_t len = sizeof(shared);
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 || EVP_PKEY_derive_set_peer(ctx.get(), peer_key.get()) != 1 ||
      EVP_PKEY_derive(ctx.get(), shared, &len) != 1 || len != 32)
    return InvalidArgument("secure aggregation: X25519 with worker {}'s public key failed (a low-order point?)",
                           peer_index);
  // info = session || min(i,j) || max(i,j): both ends build the same bytes.
  std::string info = "polis-secagg-v1/";
  info.append(session.data(), session.size());
  const uint32_t lo = std::min(my_index, peer_index), hi = std::max(my_index, peer_index);
  for (uint32_t v : {lo, hi})
    for (int b = 0; b < 4; ++b) info.push_back(static_cast<char>(v >> (8 * b)));
  PkeyCtx kdf = NewCtx(nullptr, EVP_PKEY_HKDF);
  Key256 seed;
  size_t out_len = seed.size();
  if (!kdf || EVP_PKEY_derive_init(kdf.get()) != 1 || EVP_PKEY_CTX_set_hkdf_md(kdf.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_key(kdf.get(), shared, 32) != 1 ||
      EVP_PKEY_CTX_add1_hkdf_info(kdf.get(), reinterpret_cast<const unsigned char*>(info.data()),
                                  static_cast<int>(info.size())) != 1 ||
      EVP_PKEY_derive(kdf.get(), seed.data(), &out_len) != 1 || out_len != seed.size())
    return InternalError("OpenSSL HKDF-SHA256 failed");
  return seed;
}

StatusOr<FixedPoint> FixedPoint::For(int workers, double max_abs_per_worker) {
  if (workers < 1) return InvalidArgument("secure aggregation needs at least 1 worker, got {}", workers);
  if (!(max_abs_per_worker > 0) || !std::isfinite(max_abs_per_worker))
    return InvalidArgument("fixed-point range must be > 0 and finite, got {}", max_abs_per_worker);
  const double limit = 2147483647.0 / (static_cast<double>(workers) * max_abs_per_worker);
  if (limit < 1)
    return InvalidArgument("fixed point: {} workers x |value| <= {} does not fit 32 bits", workers,
                           max_abs_per_worker);
  return FixedPoint(workers, std::exp2(std::floor(std::log2(limit))));
}

double FixedPoint::max_abs() const { return 2147483647.0 / (static_cast<double>(workers_) * scale_); }

int64_t FixedPoint::Encode(const float* x, int64_t n, uint32_t* out) const {
  const double m = max_abs();
  int64_t clamped = 0;
  for (int64_t i = 0; i < n; ++i) {
    double v = x[i];
    if (std::isnan(v)) {
      v = 0;
      ++clamped;
    } else if (std::abs(v) > m) {
      v = std::copysign(m, v);
      ++clamped;
    }
    // Two's complement: the int64 wraps to uint32 modulo 2^32.
    out[i] = static_cast<uint32_t>(static_cast<int64_t>(std::nearbyint(v * scale_)));
  }
  return clamped;
}

void FixedPoint::Decode(const uint32_t* sum, int64_t n, float* out) const {
  for (int64_t i = 0; i < n; ++i)
    out[i] = static_cast<float>(static_cast<double>(static_cast<int32_t>(sum[i])) / scale_);
}

void Masker::Mask(uint64_t round, int64_t offset, uint32_t* x, int64_t n, uint32_t round_hi) const {
  constexpr int64_t kChunk = 1024;
  uint32_t mask[kChunk];
  for (const PeerSeed& p : peers_) {
    if (p.peer_index == my_index_) continue;
    const bool add = my_index_ < p.peer_index;
    for (int64_t at = 0; at < n; at += kChunk) {
      const int64_t m = std::min(kChunk, n - at);
      ChaCha20Keystream(p.seed, round, round_hi, static_cast<uint64_t>(offset + at) * 4,
                        reinterpret_cast<uint8_t*>(mask), static_cast<size_t>(m) * 4);
      if (add) for (int64_t i = 0; i < m; ++i) x[at + i] += mask[i];
      else for (int64_t i = 0; i < m; ++i) x[at + i] -= mask[i];
    }
  }
}

void AddModular(const uint32_t* x, int64_t n, uint32_t* sum) {
  for (int64_t i = 0; i < n; ++i) sum[i] += x[i];
}

}  // namespace polis::privacy
