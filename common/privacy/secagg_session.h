// Secure aggregation in a running job (privacy.secure_aggregation,
// docs/design/privacy.md): the one-time key exchange through the
// coordinator, a worker's encoding and masking of each piece it pushes, the
// servers' modular sum, and the fixed-point range every rank derives from
// the job alone (so no message carries it).
//
// Who calls what:
//  - coordinator: SecAggKeyRelay::OnKey for each worker's SecAggKey; the
//    last one sends every worker the full list (one message each way per
//    worker and run, nothing per step);
//  - worker: SecAggWorker::Start before its first push (it sends its key
//    and waits for the list), then Encode for every piece of every round;
//  - server: SecAggFixedPoint for the scale, AddModular per push and
//    FixedPoint::Decode once every worker's push of the round is in.
// A resumed run makes new key pairs, so masks are never reused across
// attempts even where the rounds' numbers repeat.
//
// Thread-safety: SecAggWorker is immutable after Start; SecAggKeyRelay is
// used from the coordinator's one thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/privacy/secagg.h"
#include "common/proto/control.pb.h"
#include "common/role.h"
#include "common/status.h"

namespace polis::privacy {

// DP-SGD combined with secure aggregation: the Gaussian noise share a
// worker adds to its clipped sum before encoding, since no server sees the
// unmasked sum before it is final (docs/design/privacy.md, "Noise"). The
// servers then add no noise. Filled by the DP-SGD wiring in the worker and
// passed to MakeParameterServerSync (worker/gradient_sync.h).
struct NoiseShare {
  Key256 key{};                 // secret noise key (never logged)
  uint32_t share = 0;           // this worker's index: draws stream (key, step, share)
  double noise_multiplier = 0;  // σ, as the job computed it (the servers must use the same)
  double clip_norm = 0;         // C = privacy.max_grad_norm
};

// The fixed-point encoding of a job's pushes, for `workers` workers:
// FixedPoint::For(W, M) with the per-worker bound M on every coordinate of
// one push, a sum over the worker's examples:
//  - without DP-SGD: M = training.batch_size × privacy.secure_aggregation_bound;
//  - with DP-SGD (noise_multiplier σ > 0, clip C = privacy.max_grad_norm,
//    b = training.batch_size): M = (b + 6√b)·C + 10·σC/√W, the clipped sum
//    of up to b + 6√b examples (a Poisson batch larger than that has
//    negligible probability) plus ten stddevs of the noise share.
// InvalidArgument naming the fields when M does not fit 32 bits.
StatusOr<FixedPoint> SecAggFixedPoint(const proto::JobSpec& spec, int workers, double noise_multiplier);

class SecAggWorker {
 public:
  // Makes this worker's X25519 key pair, sends the public key to the
  // coordinator, waits (POLIS_TIMEOUT_S) for every worker's and derives the
  // pair seeds bound to the relayed session. `noise` is required exactly
  // when the job asks for DP-SGD. Cancelled when the coordinator stops the
  // job meanwhile.
  static StatusOr<std::unique_ptr<SecAggWorker>> Start(const RoleContext& ctx, const NoiseShare* noise);

  // One piece of a round: elements [offset, offset + n) of the flat
  // gradient `x` (this worker's sum over its examples). Adds the noise share
  // to x (when there is one), encodes into `out` and masks it for the round
  // (the servers' step and the epoch). A value outside the fixed-point range
  // (or not a number) is an error naming the setting to change: nothing of
  // the piece may then be sent.
  Status Encode(int64_t step, int epoch, int64_t offset, float* x, int64_t n, uint32_t* out) const;

  const FixedPoint& fixed_point() const { return fp_; }

 private:
  SecAggWorker(FixedPoint fp, Masker masker, std::string range_words)
      : fp_(fp), masker_(std::move(masker)), range_words_(std::move(range_words)) {}
  FixedPoint fp_;
  Masker masker_;
  std::string range_words_;  // where the range comes from, for the error
  bool has_noise_ = false;
  NoiseShare noise_;
  double noise_stddev_ = 0;
};

// The coordinator's side of the key exchange.
class SecAggKeyRelay {
 public:
  // Worker w's public key. Once every worker's is in, sends each the list
  // and `session` (the run id). RemoteError for a second key from one
  // worker, or for a key when the job has no secure aggregation.
  Status OnKey(const RoleContext& ctx, int w, const proto::SecAggKey& key, const std::string& session);

 private:
  std::vector<std::string> keys_;
  int received_ = 0;
};

}  // namespace polis::privacy
