// Secure-aggregation primitives for parameter-server BSP rounds (Bonawitz
// et al. 2017, "Practical Secure Aggregation for Privacy-Preserving Machine
// Learning", without its dropout recovery): the servers learn the sum of the
// workers' gradients and nothing about any one of them.
//
// Protocol (docs/design/privacy.md):
//  1. Every worker makes an X25519 key pair (GenerateKeyPair) and publishes
//     its public key; the coordinator relays them (an honest-but-curious
//     server model: keys are not authenticated here).
//  2. Workers i and j each derive the same 256-bit pair seed s_ij from
//     X25519(own private, peer public) by HKDF-SHA256 (AgreeSeed), bound to
//     the session (job/run id) and the unordered pair {i, j}.
//  3. Each round r, worker i encodes its gradient in fixed point as uint32
//     (FixedPoint::Encode) and adds, modulo 2^32, for every peer j,
//     +PRG(s_ij, r) when i < j and −PRG(s_ij, r) when i > j (Masker): the
//     PRG is ChaCha20 (prg.h) with nonce r, so no mask is ever reused, and a
//     key range [offset, offset + n) is masked with that slice of the stream.
//  4. A server adds the W masked vectors modulo 2^32: every mask appears
//     once with + and once with −, so the sum is the sum of the encodings,
//     which FixedPoint::Decode turns back into floats.
// A worker lost mid-round leaves its masks in the sum: the round must be
// aborted and the job resumed from its checkpoint (no dropout recovery).
//
// Fixed point: v -> round(v · scale) in two's complement mod 2^32. The sum
// of W encodings decodes correctly while |Σ_w v_w| · scale < 2^31; Encode
// clamps each value to ±max_abs() = (2^31 − 1) / (W · scale) (and counts
// the clamped ones: the caller must treat any as an error), which makes
// overflow of the sum impossible. Decoding error <= W / (2 · scale) per
// coordinate.
//
// Thread-safety: KeyPair and Masker are immutable after construction and
// may be shared; the free functions are reentrant.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/privacy/prg.h"
#include "common/status.h"

struct evp_pkey_st;

namespace polis::privacy {

using PublicKey = std::array<uint8_t, 32>;

class KeyPair {
 public:
  static StatusOr<KeyPair> Generate();
  const PublicKey& public_key() const { return public_; }
  evp_pkey_st* pkey() const { return pkey_.get(); }

 private:
  struct Free {
    void operator()(evp_pkey_st* p) const;
  };
  std::shared_ptr<evp_pkey_st> pkey_;
  PublicKey public_{};
};

// The pair seed s_ij of workers my_index and peer_index (symmetric: both
// ends get the same bytes). `session` binds it to one run (e.g. the run id),
// so seeds differ between runs even with the same keys. InvalidArgument for a
// peer key that is not a valid X25519 point (an all-zero shared secret).
StatusOr<Key256> AgreeSeed(const KeyPair& mine, const PublicKey& peer, uint32_t my_index,
                           uint32_t peer_index, std::string_view session);

class FixedPoint {
 public:
  // Encoding for `workers` summands each within ±max_abs_per_worker: the
  // largest power-of-two scale that keeps W · max_abs · scale < 2^31.
  // InvalidArgument for workers < 1 or max_abs_per_worker <= 0 or too large
  // to keep at least one unit (scale >= 1).
  static StatusOr<FixedPoint> For(int workers, double max_abs_per_worker);
  double scale() const { return scale_; }
  int workers() const { return workers_; }
  // The largest magnitude one worker's value may have (Encode clamps to it).
  double max_abs() const;
  // Worst-case |decoded sum − true sum| per coordinate (rounding only).
  double rounding_bound() const { return 0.5 * workers_ / scale_; }
  // out[i] = round(clamp(x[i]) · scale) mod 2^32; returns how many values
  // were clamped (NaN counts, and is encoded as 0).
  int64_t Encode(const float* x, int64_t n, uint32_t* out) const;
  // The signed value of each modular sum, divided by the scale.
  void Decode(const uint32_t* sum, int64_t n, float* out) const;

 private:
  FixedPoint(int workers, double scale) : workers_(workers), scale_(scale) {}
  int workers_;
  double scale_;
};

struct PeerSeed {
  uint32_t peer_index;
  Key256 seed;
};

// Adds worker my_index's pairwise masks to encoded values.
class Masker {
 public:
  Masker(uint32_t my_index, std::vector<PeerSeed> peers)
      : my_index_(my_index), peers_(std::move(peers)) {}
  // x[i] (element offset + i of the flat gradient) += Σ_j ±PRG(s_ij, round)
  // [offset + i], mod 2^32. The PRG's nonce is (round, round_hi): the
  // parameter servers' step and the epoch, since an epoch's last round and
  // the next epoch's first share a step (two pushes must never share masks).
  void Mask(uint64_t round, int64_t offset, uint32_t* x, int64_t n, uint32_t round_hi = 0) const;

 private:
  uint32_t my_index_;
  std::vector<PeerSeed> peers_;
};

// sum[i] += x[i] mod 2^32: what a server does with each worker's push.
void AddModular(const uint32_t* x, int64_t n, uint32_t* sum);

}  // namespace polis::privacy
