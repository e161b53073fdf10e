#include "registry/explain_queue.h"

#include <omp.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "common/thread_name.h"
#include "registry/metrics.h"

namespace polis::registry {

using Clock = std::chrono::steady_clock;

Status ValidateExplainLimits(const ExplainLimits& l) {
  if (l.threads < 1 || l.threads > 64)
    return InvalidArgument("--explain-threads must be in 1..64, got {}", l.threads);
  if (l.max_queue < 1)
    return InvalidArgument("--explain-queue must be at least 1, got {}", l.max_queue);
  if (l.max_row_steps < 1)
    return InvalidArgument("--explain-max-row-steps must be at least 1, got {}", l.max_row_steps);
  if (l.timeout_ms < 1)
    return InvalidArgument("--explain-timeout-ms must be at least 1, got {}", l.timeout_ms);
  if (l.nice < 0 || l.nice > 19)
    return InvalidArgument("--explain-nice must be in 0..19, got {}", l.nice);
  return Status::Ok();
}

ExplainQueue::ExplainQueue(ExplainLimits limits, Metrics* metrics)
    : limits_(limits), metrics_(metrics) {}

ExplainQueue::~ExplainQueue() { Stop(); }

void ExplainQueue::Start() {
  for (int i = 0; i < limits_.threads; ++i)
    workers_.emplace_back([this, i] {
      SetThreadName(fmt::format("explain/{}", i));
      Work();
    });
}

void ExplainQueue::Stop() {
  stopping_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

bool ExplainQueue::Submit(ExplainJob job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || in_flight_ >= limits_.max_queue) {
      if (metrics_) metrics_->CountExplain("rejected");
      return false;
    }
    ++in_flight_;
    queue_.push_back(std::move(job));
  }
  if (metrics_) metrics_->AdjustExplainQueue(+1);
  cv_.notify_one();
  return true;
}

void ExplainQueue::Work() {
  // One OpenMP thread, and below the inference threads in the scheduler:
  // an explanation takes what inference leaves. (Per thread on Linux.)
  omp_set_num_threads(1);
  const pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
  if (limits_.nice > 0 && setpriority(PRIO_PROCESS, static_cast<id_t>(tid), limits_.nice) != 0)
    POLIS_LOG(kWarn, kRegistry, "cannot lower the explanation worker's priority: {}",
              std::strerror(errno));
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;
    ExplainJob job = std::move(queue_.front());
    queue_.pop_front();
    const bool stopping = stop_;
    lock.unlock();
    if (stopping) {
      ExplainOutcome o;
      o.status = Status(Code::kCancelled, "the server is stopping; the explanation was not run");
      job.done(std::move(o));
    } else {
      Run(job);
    }
    job = ExplainJob();  // the version reference goes before the next wait
    if (metrics_) metrics_->AdjustExplainQueue(-1);
    lock.lock();
    --in_flight_;
  }
}

void ExplainQueue::Run(ExplainJob& job) {
  const int64_t timeout_ms = limits_.timeout_ms;
  int64_t rows_done = 0;
  auto keep_going = [&]() -> Status {
    if (job.client_gone && job.client_gone->load())
      return Status(Code::kCancelled, "the client hung up");
    if (stopping_) return Status(Code::kCancelled, "the server is stopping");
    if (Clock::now() > job.deadline)
      return Timeout("the explanation took longer than --explain-timeout-ms ({} ms)", timeout_ms);
    ++rows_done;
    return Status::Ok();
  };
  ExplainOutcome o;
  // Dropped unseen when the client left, or the time ran out, while it waited.
  if (Status st = keep_going(); !st.ok()) {
    o.status = st.WithContext("explanation not started");
  } else {
    rows_done = 0;
    o = job.version->Explain(job.request, keep_going);
  }
  const Code code = o.status.code();
  if (metrics_) {
    // keep_going said yes once before each row that ran.
    metrics_->CountExplainRows(code == Code::kOk ? job.request.rows : rows_done);
    metrics_->CountExplain(code == Code::kOk          ? "success"
                           : code == Code::kCancelled ? "cancelled"
                           : code == Code::kTimeout   ? "timeout"
                                                      : "failure");
  }
  if (code == Code::kCancelled)
    POLIS_LOG(kInfo, kRegistry, "explanation for model '{}' version {} stopped: {}",
              job.version->model_name(), job.version->version(), o.status.message());
  job.done(std::move(o));
}

}  // namespace polis::registry
