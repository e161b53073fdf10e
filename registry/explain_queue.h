// Explanations (integrated gradients, saliency) for the registry server:
// their own bounded queue and worker threads, apart from inference.
//
// An explanation costs rows x (steps + 1) forward and backward passes; an
// infer of the same rows costs one forward pass. So explanations never run
// on a version's inference thread: Submit queues them here (refusing when
// `max_queue` requests are already waiting or running), and `threads`
// workers, each with one OpenMP thread and a lowered scheduling priority
// (nice `nice`), run them with ServedVersion::Explain. Between rows a worker
// checks the request's deadline and whether its client hung up, and stops
// (Timeout, Cancelled) instead of computing what nobody will read; a request
// whose client left while it waited is dropped without computing.
//
// Thread-safety: Submit from any thread; Start/Stop from one. `done` runs on
// a worker thread and must not block.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "registry/served_version.h"

namespace polis::registry {

class Metrics;

struct ExplainLimits {
  int threads = 1;                // explanation workers (server-wide)
  int64_t max_queue = 4;          // requests waiting or running; beyond: refused (429)
  int64_t max_row_steps = 2048;   // rows x steps of one request; beyond: 400
  int64_t timeout_ms = 10000;     // from arrival to answer; beyond: stopped (503)
  int nice = 10;                  // workers' niceness: inference threads go first
};
Status ValidateExplainLimits(const ExplainLimits& l);

struct ExplainJob {
  std::shared_ptr<ServedVersion> version;
  ExplainRequest request;
  std::chrono::steady_clock::time_point deadline;
  std::shared_ptr<const std::atomic<bool>> client_gone;  // may be null
  std::function<void(ExplainOutcome)> done;
};

class ExplainQueue {
 public:
  ExplainQueue(ExplainLimits limits, Metrics* metrics);
  ~ExplainQueue();
  ExplainQueue(const ExplainQueue&) = delete;
  ExplainQueue& operator=(const ExplainQueue&) = delete;

  void Start();
  // Stops running explanations at their next row, answers what is queued
  // (Cancelled, without computing), then joins.
  void Stop();
  // False when the queue is full (the job is dropped; `done` is not called).
  bool Submit(ExplainJob job);
  const ExplainLimits& limits() const { return limits_; }

 private:
  void Work();
  void Run(ExplainJob& job);

  const ExplainLimits limits_;
  Metrics* metrics_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ExplainJob> queue_;  // GUARDED_BY(mu_)
  int64_t in_flight_ = 0;         // GUARDED_BY(mu_): queued or running
  bool stop_ = false;             // GUARDED_BY(mu_)
  std::atomic<bool> stopping_{false};  // read by running explanations
  std::vector<std::thread> workers_;
};

}  // namespace polis::registry
