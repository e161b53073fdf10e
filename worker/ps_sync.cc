// ParameterServerSync: one combined push/pull round per step (BSP).
#include "common/comm/key_ranges.h"
#include "common/comm/ps_client.h"
#include "worker/gradient_sync.h"

namespace polis::worker {
namespace {

class ParameterServerSync : public GradientSync {
 public:
  ParameterServerSync(const RoleContext& ctx, float* params, float* grads)
      : params_(params), grads_(grads),
        client_(ctx.data, ServerRanks(ctx), comm::PartitionByBytes(ctx.model.parameter_count(), ctx.servers),
                ctx.ctrl, ctx.coordinator_rank()) {}

  Status Sync(const StepInfo& info, StepResult* result) override {
    PushHeader h;
    h.step = info.step;
    h.samples = info.samples;
    h.flags = info.samples == 0 ? kPushEpochEnd : 0;
    h.epoch = info.epoch;
    h.consumed = info.consumed;
    POLIS_ASSIGN_OR_RETURN(int64_t ts, client_.PushPull(h, grads_, params_));
    PullHeader reply;
    POLIS_RETURN_IF_ERROR(client_.Wait(ts, &reply));
    result->epoch_over = (reply.flags & kPullEpochDone) != 0;
    result->server_step = reply.step;
    return Status::Ok();
  }

 private:
  static std::vector<int> ServerRanks(const RoleContext& ctx) {
    std::vector<int> r;
    for (int s = 0; s < ctx.servers; ++s) r.push_back(ctx.server_rank(s));
    return r;
  }
  float* params_;
  float* grads_;
  comm::PsClient client_;
};

}  // namespace

StatusOr<std::unique_ptr<GradientSync>> MakeParameterServerSync(const RoleContext& ctx,
                                                                float* params, float* grads) {
  if (ctx.servers < 1) return InvalidArgument("PARAMETER_SERVER mode needs at least one server");
  return std::unique_ptr<GradientSync>(new ParameterServerSync(ctx, params, grads));
}

}  // namespace polis::worker
