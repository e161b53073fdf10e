#include "common/comm/wire_checks.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "common/echo.h"

namespace polis::comm {
namespace {

// The first field out of range, as a RemoteError naming the rank.
class Checker {
 public:
  Checker(int from, const char* what) : from_(from), what_(what) {}

  void Range(const char* field, int64_t v, int64_t lo, int64_t hi) {
    if (status_.ok() && (v < lo || v > hi))
      status_ = RemoteError("rank {} sent {} with {} = {}; expected {}..{}", from_, what_, field, v,
                            lo, hi);
  }
  void Ordered(const char* first, int64_t a, const char* second, int64_t b) {
    if (status_.ok() && a > b)
      status_ = RemoteError("rank {} sent {} with {} = {} > {} = {}", from_, what_, first, a,
                            second, b);
  }
  void Finite(const char* field, double v, bool nan_ok = false) {
    if (status_.ok() && !std::isfinite(v) && !(nan_ok && std::isnan(v)))
      status_ = RemoteError("rank {} sent {} with {} = {}; expected a finite number", from_, what_,
                            field, v);
  }
  void NonNegative(const char* field, double v) {
    Finite(field, v);
    if (status_.ok() && v < 0)
      status_ = RemoteError("rank {} sent {} with {} = {}; expected >= 0", from_, what_, field, v);
  }
  void Fail(std::string why) {
    if (status_.ok()) status_ = RemoteError("rank {} sent {}: {}", from_, what_, why);
  }
  Status status() const { return status_; }

 private:
  int from_;
  const char* what_;
  Status status_ = Status::Ok();
};

constexpr int64_t kMax = INT64_MAX;

// An evaluation's sums (EvalSums): counts within the samples, error sums
// finite (NaN allowed: a diverged model reports it), and a confusion matrix
// only where one is expected: outputs x outputs counts adding up to the
// samples.
void CheckSums(Checker& c, const proto::EvalSums& e, const WireLimits& l, bool confusion) {
  c.Range("eval samples", e.samples(), 0, kMax);
  c.Range("eval correct", e.correct(), 0, e.samples());
  c.Range("eval ape_count", e.ape_count(), 0, kMax);
  c.Range("eval values", e.values(), 0, kMax);
  c.Finite("eval loss_sum", e.loss_sum(), /*nan_ok=*/true);
  for (double v : {e.abs_error_sum(), e.sq_error_sum(), e.ape_sum(), e.sape_sum()})
    c.Finite("an eval error sum", v, /*nan_ok=*/true);
  if (e.confusion_size() == 0) return;
  const int64_t k = l.outputs;
  if (!confusion || k < 1 || k > 4096 || e.confusion_size() != k * k) {
    c.Fail(fmt::format("a confusion matrix of {} counts where {} were expected", e.confusion_size(),
                       confusion ? k * k : 0));
    return;
  }
  int64_t total = 0;
  for (int64_t v : e.confusion()) {
    c.Range("a confusion count", v, 0, e.samples());
    total += std::max<int64_t>(v, 0);
  }
  if (total != e.samples())
    c.Fail(fmt::format("a confusion matrix counting {} samples of {}", total, e.samples()));
}

}  // namespace

Status DecodeControl(std::string_view bytes, int from, proto::ControlMessage* msg) {
  if (!msg->ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    return RemoteError("rank {} sent a control message that does not parse ({} bytes)", from,
                       bytes.size());
  return Status::Ok();
}

Status CheckControlMessage(const proto::ControlMessage& msg, int from, const WireLimits& l) {
  using M = proto::ControlMessage;
  const int64_t n = l.samples_per_epoch;
  const int64_t last_epoch = l.epochs - 1;
  switch (msg.body_case()) {
    case M::kShardRequest: {
      Checker c(from, "a shard request");
      c.Range("epoch", msg.shard_request().epoch(), 0, last_epoch);
      return c.status();
    }
    case M::kShardGrant: {
      const auto& g = msg.shard_grant();
      Checker c(from, "a shard grant");
      c.Range("epoch", g.epoch(), 0, last_epoch);
      c.Range("begin", g.begin(), 0, n);
      c.Range("end", g.end(), 0, n);
      c.Ordered("begin", g.begin(), "end", g.end());
      return c.status();
    }
    case M::kProgress: {
      const auto& p = msg.progress();
      Checker c(from, "progress");
      c.Range("epoch", p.epoch(), 0, last_epoch);
      c.Range("step", p.step(), 0, kMax);
      c.Range("samples", p.samples(), 0, n);
      c.Finite("loss", p.loss(), /*nan_ok=*/true);
      c.NonNegative("compute_seconds", p.compute_seconds());
      c.NonNegative("comm_seconds", p.comm_seconds());
      c.NonNegative("wait_seconds", p.wait_seconds());
      return c.status();
    }
    case M::kEpochReport: {
      const auto& r = msg.epoch_report();
      Checker c(from, "an epoch report");
      c.Range("epoch", r.epoch(), 0, last_epoch);
      c.Range("train_samples", r.train_samples(), 0, n);
      c.Range("train_correct", r.train_correct(), 0, r.train_samples());
      c.Range("steps", r.steps(), 0, kMax);
      c.Finite("train_loss_sum", r.train_loss_sum(), /*nan_ok=*/true);
      c.NonNegative("compute_seconds", r.compute_seconds());
      c.NonNegative("comm_seconds", r.comm_seconds());
      CheckSums(c, r.eval(), l, /*confusion=*/false);
      return c.status();
    }
    case M::kEpochVerdict: {
      Checker c(from, "an epoch verdict");
      c.Range("epoch", msg.epoch_verdict().epoch(), 0, last_epoch);
      return c.status();
    }
    case M::kFinalEvaluationRequest: {
      const std::string& p = msg.final_evaluation_request().checkpoint();
      Checker c(from, "a final evaluation request");
      if (p.size() > 4096 || p.find('\0') != std::string::npos)
        c.Fail(fmt::format("checkpoint '{}', not a directory path", EchoValue(p)));
      return c.status();
    }
    case M::kFinalEvaluation: {
      const auto& f = msg.final_evaluation();
      Checker c(from, "a final evaluation");
      CheckSums(c, f.test(), l, /*confusion=*/true);
      if (f.params_sha256().size() > 64) c.Fail("a parameter checksum longer than 64 characters");
      return c.status();
    }
    case M::kServerCommand: {
      const auto& s = msg.server_command();
      Checker c(from, "a server command");
      if (!proto::ServerCommand::Kind_IsValid(s.kind())) c.Fail("an unknown kind");
      c.Range("step", s.step(), 0, kMax);
      return c.status();
    }
    case M::kServerStep: {
      Checker c(from, "a server step");
      c.Range("step", msg.server_step().step(), 0, kMax);
      return c.status();
    }
    case M::kShardSaved: {
      const auto& s = msg.shard_saved();
      Checker c(from, "a saved checkpoint shard");
      c.Range("step", s.step(), 0, kMax);
      c.Range("epoch", s.epoch(), 0, last_epoch);
      // An all-reduce worker's report (worker set) carries its own count;
      // only the lead worker's names the replica file.
      const bool replica = s.has_worker();
      if (replica) c.Range("worker", s.worker(), 0, l.workers - 1);
      else c.Range("server", s.server(), 0, l.servers - 1);
      c.Range("begin", s.begin(), 0, l.parameter_count);
      c.Range("end", s.end(), 0, l.parameter_count);
      c.Ordered("begin", s.begin(), "end", s.end());
      const int counts = replica ? 1 : l.workers;
      if (s.consumed_size() != counts)
        c.Fail(fmt::format("{} consumed counts, {} expected", s.consumed_size(), counts));
      for (int64_t v : s.consumed()) c.Range("consumed", v, 0, n);
      const std::string& p = s.path();
      if (replica && p.empty()) return c.status();
      if (p.empty() || p == "." || p == ".." || p.find('/') != std::string::npos ||
          p.find('\0') != std::string::npos)
        c.Fail(fmt::format("path '{}', not a file name in the checkpoint directory", EchoValue(p)));
      return c.status();
    }
    case M::kServerStats: {
      const auto& s = msg.server_stats();
      Checker c(from, "server stats");
      c.Range("server", s.server(), 0, l.servers - 1);
      c.Range("updates", s.updates(), 0, kMax);
      c.Range("max_staleness", s.max_staleness(), 0, kMax);
      c.Range("held_replies", s.held_replies(), 0, kMax);
      c.Range("bytes_in", s.bytes_in(), 0, kMax);
      c.Range("bytes_out", s.bytes_out(), 0, kMax);
      c.Range("key_begin", s.key_begin(), 0, l.parameter_count);
      c.Range("key_end", s.key_end(), 0, l.parameter_count);
      c.Ordered("key_begin", s.key_begin(), "key_end", s.key_end());
      for (int r : s.waiting_for()) c.Range("waiting_for", r, 0, l.servers + l.workers);
      return c.status();
    }
    case M::kSecaggKey: {
      Checker c(from, "a secure-aggregation key");
      if (msg.secagg_key().public_key().size() != 32)
        c.Fail(fmt::format("a public key of {} bytes; X25519 keys have 32", msg.secagg_key().public_key().size()));
      return c.status();
    }
    case M::kSecaggKeys: {
      const auto& k = msg.secagg_keys();
      Checker c(from, "the secure-aggregation keys");
      if (k.public_keys_size() != l.workers)
        c.Fail(fmt::format("{} public keys for {} workers", k.public_keys_size(), l.workers));
      for (const std::string& key : k.public_keys())
        if (key.size() != 32) c.Fail(fmt::format("a public key of {} bytes; X25519 keys have 32", key.size()));
      if (k.session().size() > 4096 || k.session().find('\0') != std::string::npos)
        c.Fail("a session name that is not a run id");
      return c.status();
    }
    case M::kRecordRequest: {
      const auto& r = msg.record_request();
      Checker c(from, "a record request");
      c.Range("part", r.part(), 0, 2);
      c.Range("indices", r.indices_size(), r.leaving() ? 0 : 1, r.leaving() ? 0 : int64_t{1} << 20);
      for (int64_t i : r.indices()) c.Range("an index", i, 0, kMax);
      return c.status();
    }
    case M::kFatalError:
      return Status::Ok();
    case M::BODY_NOT_SET:
      break;
  }
  return RemoteError("rank {} sent a control message with no body", from);
}

Status CheckPushHeader(const PushHeader& h, int from, const WireLimits& l) {
  Checker c(from, "a push header");
  c.Range("step", h.step, 0, kMax);
  c.Range("samples", h.samples, 0, l.samples_per_epoch);
  c.Range("epoch", h.epoch, 0, l.epochs - 1);
  c.Range("consumed", h.consumed, 0, l.samples_per_epoch);
  if (h.flags & ~int64_t{kPushEpochEnd | kPushLeave}) c.Fail(fmt::format("unknown flags {:#x}", h.flags));
  c.NonNegative("grad_norm", h.grad_norm);
  return c.status();
}

Status CheckPullHeader(const PullHeader& h, int from) {
  Checker c(from, "a pull reply header");
  c.Range("step", h.step, 0, kMax);
  c.Range("total_samples", h.total_samples, 0, kMax);
  if (h.flags & ~int64_t{kPullEpochDone | kPullCheckpoint | kPullStopped})
    c.Fail(fmt::format("unknown flags {:#x}", h.flags));
  return c.status();
}

}  // namespace polis::comm
