#include "common/privacy/secagg_session.h"

#include <cmath>
#include <cstring>

#include "common/comm/control.h"
#include "common/comm/wait.h"
#include "common/comm/wire_checks.h"
#include "common/log.h"
#include "common/privacy/noise.h"

namespace polis::privacy {
namespace {

bool WantsDp(const proto::JobSpec& spec) {
  return spec.privacy().has_target_epsilon() || spec.privacy().has_noise_multiplier();
}

// M and the words that say where it comes from (for the error on a value
// outside it).
std::pair<double, std::string> Bound(const proto::JobSpec& spec, int workers, double sigma) {
  const double b = spec.training().batch_size();
  if (!WantsDp(spec)) {
    const double g = spec.privacy().secure_aggregation_bound();
    return {b * g, fmt::format("+-{:g} = training.batch_size {:g} x privacy.secure_aggregation_bound {:g}; raise "
                               "privacy.secure_aggregation_bound",
                               b * g, b, g)};
  }
  const double c = spec.privacy().max_grad_norm();
  const double m = (b + 6 * std::sqrt(b)) * c + 10 * NoiseStddev(sigma, c, workers);
  return {m, fmt::format("+-{:g}: (batch_size {:g} + 6 sqrt(batch_size)) x privacy.max_grad_norm {:g} + 10 noise "
                         "share stddevs; a batch far above training.batch_size?",
                         m, b, c)};
}

}  // namespace

StatusOr<FixedPoint> SecAggFixedPoint(const proto::JobSpec& spec, int workers, double noise_multiplier) {
  const auto [m, words] = Bound(spec, workers, noise_multiplier);
  auto fp = FixedPoint::For(workers, m);
  if (!fp.ok())
    return InvalidArgument("secure aggregation: {} workers x a push range of {} do not fit 32-bit fixed point",
                           workers, words);
  return fp;
}

StatusOr<std::unique_ptr<SecAggWorker>> SecAggWorker::Start(const RoleContext& ctx, const NoiseShare* noise) {
  const proto::JobSpec& spec = ctx.job.spec;
  const int W = ctx.workers, me = ctx.worker_index();
  if (W < 2)
    return InvalidArgument("{}: field 'privacy.secure_aggregation' needs at least 2 workers (with one, the sum is its "
                           "gradient); this run has {}",
                           ctx.job.path, W);
  if (WantsDp(spec) != (noise != nullptr))
    return InternalError("secure aggregation: the job {} DP-SGD but the worker {} a noise share",
                         WantsDp(spec) ? "asks for" : "does not ask for", noise ? "passed" : "did not pass");
  const double sigma = noise ? noise->noise_multiplier : 0.0;
  POLIS_ASSIGN_OR_RETURN(FixedPoint fp, SecAggFixedPoint(spec, W, sigma));
  POLIS_ASSIGN_OR_RETURN(KeyPair keys, KeyPair::Generate());

  proto::ControlMessage mine;
  mine.mutable_secagg_key()->set_public_key(keys.public_key().data(), keys.public_key().size());
  POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, ctx.coordinator_rank(), mine));
  proto::ControlMessage msg;
  POLIS_RETURN_IF_ERROR(comm::RecvControl(ctx.ctrl, ctx.coordinator_rank(), nullptr, &msg, comm::DeadlineFromNow(),
                                          "every worker's secure-aggregation key from the coordinator"));
  const comm::WireLimits limits{spec.training().epochs(), ctx.train_samples, W, ctx.servers,
                                ctx.model.parameter_count()};
  POLIS_RETURN_IF_ERROR(comm::CheckControlMessage(msg, ctx.coordinator_rank(), limits));
  if (msg.has_server_command()) return Cancelled();  // the job stops before it started
  if (!msg.has_secagg_keys())
    return RemoteError("the coordinator answered a secure-aggregation key with something else");
  const proto::SecAggKeys& all = msg.secagg_keys();
  if (all.public_keys(me).size() != 32 ||
      std::memcmp(all.public_keys(me).data(), keys.public_key().data(), 32) != 0)
    return RemoteError("the coordinator relayed another public key as worker {}'s own", me);
  std::vector<PeerSeed> seeds;
  for (int j = 0; j < W; ++j) {
    if (j == me) continue;
    PublicKey peer;
    std::memcpy(peer.data(), all.public_keys(j).data(), 32);
    POLIS_ASSIGN_OR_RETURN(Key256 seed, AgreeSeed(keys, peer, me, j, all.session()));
    seeds.push_back({static_cast<uint32_t>(j), seed});
  }
  const std::string words = Bound(spec, W, sigma).second;
  std::unique_ptr<SecAggWorker> s(new SecAggWorker(fp, Masker(me, std::move(seeds)), words));
  if (noise) {
    s->has_noise_ = true;
    s->noise_ = *noise;
    s->noise_stddev_ = NoiseStddev(noise->noise_multiplier, noise->clip_norm, W);
  }
  POLIS_LOG(kInfo, kWorker, "secure aggregation: pair seeds with {} workers, fixed point 2^{:g}{}", W - 1,
            std::log2(fp.scale()), noise ? ", noise share added before masking" : "");
  return s;
}

Status SecAggWorker::Encode(int64_t step, int epoch, int64_t offset, float* x, int64_t n, uint32_t* out) const {
  if (has_noise_)
    AddGaussianNoise(noise_.key, static_cast<uint64_t>(step), noise_.share, noise_stddev_, offset, x, n);
  if (const int64_t bad = fp_.Encode(x, n, out); bad > 0)
    return InvalidArgument("secure aggregation: {} gradient value(s) of step {} are not numbers or lie outside the "
                      "fixed-point range {}",
                      bad, step, range_words_);
  masker_.Mask(static_cast<uint64_t>(step), offset, out, n, static_cast<uint32_t>(epoch));
  return Status::Ok();
}

Status SecAggKeyRelay::OnKey(const RoleContext& ctx, int w, const proto::SecAggKey& key,
                             const std::string& session) {
  if (!ctx.job.spec.privacy().secure_aggregation())
    return RemoteError("{} sent a secure-aggregation key, but the job has no privacy.secure_aggregation",
                       ctx.RankName(ctx.worker_rank(w)));
  if (keys_.empty()) keys_.resize(ctx.workers);
  if (!keys_[w].empty())
    return RemoteError("{} sent a second secure-aggregation key", ctx.RankName(ctx.worker_rank(w)));
  keys_[w] = key.public_key();
  if (++received_ < ctx.workers) return Status::Ok();
  proto::ControlMessage msg;
  for (const std::string& k : keys_) msg.mutable_secagg_keys()->add_public_keys(k);
  msg.mutable_secagg_keys()->set_session(session);
  for (int v = 0; v < ctx.workers; ++v) POLIS_RETURN_IF_ERROR(comm::SendControl(ctx.ctrl, ctx.worker_rank(v), msg));
  POLIS_LOG(kInfo, kCoord, "secure aggregation: relayed {} workers' public keys", ctx.workers);
  return Status::Ok();
}

}  // namespace polis::privacy
