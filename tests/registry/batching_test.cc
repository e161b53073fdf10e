// Dynamic batching (concurrent requests merged, results equal to unbatched
// ones, queue limits) and explanations (closed forms on a linear model,
// completeness on a CNN), directly and over HTTP.
#include "registry/served_version.h"

#include <sched.h>

#include <cmath>
#include <filesystem>
#include <future>
#include <map>
#include <thread>

#include "tests/registry/registry_test_util.h"

namespace polis::registry {
namespace {

using namespace testing;  // NOLINT

std::shared_ptr<ServedVersion> Serve(const ModelArtifact& a, BatchingOptions o) {
  auto sv = ServedVersion::FromArtifact("m", 1, a, "sha", o, nullptr);
  EXPECT_TRUE(sv.ok()) << sv.status().ToString();
  return sv.ok() ? *sv : nullptr;
}

struct ClientResults {
  int failures = 0;  // errors and answers off the reference
  int merged = 0;    // answers from a batch of more than one row
};

// `clients` threads, each with a connection of its own, send `each` rows
// one request at a time; every answer is checked against the reference.
ClientResults InferFromClients(ServerHarness& h, const ModelArtifact& a, int clients, int each) {
  std::atomic<int> failures{0}, merged{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t)
    threads.emplace_back([&, t] {
      HttpClient c = h.Client();
      for (int i = 0; i < each; ++i) {
        const auto x = Pattern(64, t * 100 + i);
        auto r = c.Request("POST", "/v2/models/m/infer", InferBody(x, 1, kTinyInput).dump());
        if (!r.ok() || r->status != 200) {
          failures++;
          continue;
        }
        json j = json::parse(r->body);
        if (j["parameters"]["batch_rows"].get<int>() > 1) merged++;
        const auto logits = OutputData(j, "logits");
        const auto ref = ReferenceLogits(a, x);
        for (int k = 0; k < 5; ++k)
          if (std::fabs(logits[k] - ref[k]) > 1e-5) failures++;
      }
    });
  for (auto& th : threads) th.join();
  return {failures.load(), merged.load()};
}

TEST(BatchingTest, QueuedRequestsAreMergedAndMatchUnbatchedResults) {
  const ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 5);
  BatchingOptions o;
  o.max_batch_size = 8;
  o.max_queue_delay_us = 2'000'000;  // long: the batch closes because it is full
  auto sv = Serve(a, o);
  ASSERT_TRUE(sv);
  // 1 + 2 + 1 + 3 + 1 = 8 rows: one batch.
  const std::vector<int> rows = {1, 2, 1, 3, 1};
  std::vector<std::promise<InferOutcome>> done(rows.size());
  std::vector<std::vector<float>> inputs;
  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<float> x;
    for (int r = 0; r < rows[i]; ++r) {
      auto p = Pattern(64, static_cast<int>(10 * i + r));
      x.insert(x.end(), p.begin(), p.end());
    }
    inputs.push_back(x);
  }
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < rows.size(); ++i)
    sv->Infer(inputs[i], rows[i], [&done, i](InferOutcome r) { done[i].set_value(std::move(r)); });
  for (size_t i = 0; i < rows.size(); ++i) {
    InferOutcome r = done[i].get_future().get();
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
    EXPECT_EQ(r.batch_rows, 8) << "request " << i;
    ASSERT_EQ(r.logits.size(), static_cast<size_t>(rows[i] * 5));
    for (int row = 0; row < rows[i]; ++row) {
      std::vector<float> x(inputs[i].begin() + row * 64, inputs[i].begin() + (row + 1) * 64);
      auto ref = ReferenceLogits(a, x);
      for (int k = 0; k < 5; ++k) EXPECT_NEAR(r.logits[row * 5 + k], ref[k], 1e-5);
    }
  }
  // Full batches do not wait for the delay.
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.5);

  // A lone request waits at most the queue delay, then runs alone.
  BatchingOptions quick = o;
  quick.max_queue_delay_us = 1000;
  auto sv2 = Serve(a, quick);
  InferOutcome lone = sv2->InferSync(Pattern(64, 1), 1);
  ASSERT_TRUE(lone.status.ok());
  EXPECT_EQ(lone.batch_rows, 1);
}

TEST(BatchingTest, RequestsTooLargeOrBeyondTheQueueAreRefused) {
  const ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 5);
  BatchingOptions o;
  o.max_batch_size = 2;
  o.max_queue_rows = 2;
  o.max_queue_delay_us = 300'000;
  auto sv = Serve(a, o);
  EXPECT_EQ(sv->InferSync(Pattern(3 * 64, 1), 3).status.code(), Code::kInvalidArgument);
  std::promise<InferOutcome> first;
  sv->Infer(Pattern(64, 1), 1, [&](InferOutcome r) { first.set_value(std::move(r)); });
  // One row waits for company (300 ms); two more would exceed max_queue_rows.
  InferOutcome refused = sv->InferSync(Pattern(2 * 64, 2), 2);
  EXPECT_EQ(refused.status.code(), Code::kFailedPrecondition) << refused.status.ToString();
  InferOutcome r = first.get_future().get();
  EXPECT_TRUE(r.status.ok());
  EXPECT_EQ(r.batch_rows, 1);
}

TEST(PlanPassesTest, PassesCostingTheirRowsAreNeverPadded) {
  const std::vector<int64_t> buckets = {1, 2, 4, 8, 12};
  const std::vector<double> linear = {1, 2, 4, 8, 12};
  const auto plan = PlanPasses(buckets, linear, 12);
  EXPECT_EQ(PassesOf(plan, 5), (std::vector<int64_t>{4, 1}));
  EXPECT_EQ(PassesOf(plan, 7), (std::vector<int64_t>{4, 2, 1}));
  EXPECT_EQ(PassesOf(plan, 8), (std::vector<int64_t>{8}));
  EXPECT_EQ(PassesOf(plan, 11), (std::vector<int64_t>{8, 2, 1}));
  for (int64_t n = 1; n <= 12; ++n) {
    const auto p = PassesOf(plan, n);
    int64_t sum = 0;
    for (int64_t b : p) sum += b;
    EXPECT_EQ(sum, n) << n << " rows";
  }
}

TEST(PlanPassesTest, PassesCostingTheSameRunOnePaddedPass) {
  const std::vector<int64_t> buckets = {1, 2, 4, 8};
  const auto plan = PlanPasses(buckets, {1, 1, 1, 1}, 8);
  for (int64_t n = 1; n <= 8; ++n) {
    const auto p = PassesOf(plan, n);
    ASSERT_EQ(p.size(), 1u) << n << " rows";
    EXPECT_EQ(p[0], *std::lower_bound(buckets.begin(), buckets.end(), n)) << n << " rows";
  }
}

TEST(PlanPassesTest, PaddingIsChosenWhereItIsCheaperThanAnotherPass) {
  // A pass of 4 costs little more than one of 2: 3 rows pad to 4; 5 rows
  // run as 4 + 1 (2.1 < a pass of 8); 6 and 7 rows pad to 8 (2.12 < 4 + 2
  // or 4 + 4).
  const std::vector<int64_t> buckets = {1, 2, 4, 8};
  const auto plan = PlanPasses(buckets, {1.0, 1.05, 1.1, 2.12}, 8);
  EXPECT_EQ(PassesOf(plan, 3), (std::vector<int64_t>{4}));
  EXPECT_EQ(PassesOf(plan, 5), (std::vector<int64_t>{4, 1}));
  EXPECT_EQ(PassesOf(plan, 6), (std::vector<int64_t>{8}));
  EXPECT_EQ(PassesOf(plan, 7), (std::vector<int64_t>{8}));
}

TEST(BatchingTest, EveryBatchSizeMatchesUnbatchedRowsWhenRunAsSeveralPasses) {
  ScopedEnv cost("POLIS_TEST_PASS_COST", "rows");
  const ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 5);
  BatchingOptions o;
  o.max_batch_size = 11;  // buckets 1, 2, 4, 8, 11
  auto sv = Serve(a, o);
  ASSERT_TRUE(sv);
  EXPECT_EQ(sv->batch_passes(7), (std::vector<int64_t>{4, 2, 1}));
  EXPECT_EQ(sv->batch_passes(10), (std::vector<int64_t>{8, 2}));
  for (int64_t n = 1; n <= 11; ++n) {
    const std::vector<float> x = Pattern(n * 64, static_cast<int>(n));
    InferOutcome r = sv->InferSync(x, n);
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
    ASSERT_EQ(r.logits.size(), static_cast<size_t>(n * 5));
    for (int64_t row = 0; row < n; ++row) {
      auto ref = ReferenceLogits(a, std::vector<float>(x.begin() + row * 64, x.begin() + (row + 1) * 64));
      for (int k = 0; k < 5; ++k)
        EXPECT_NEAR(r.logits[row * 5 + k], ref[k], 1e-5) << n << " rows, row " << row;
    }
  }
  // Requests of 3, 2, 4 and 1 rows merged into one batch of 10 (passes of 8
  // and 2): the third request straddles the passes.
  BatchingOptions wait = o;
  wait.max_queue_delay_us = 500'000;  // the four are queued well within it
  auto merged = Serve(a, wait);
  ASSERT_TRUE(merged);
  const std::vector<int> rows = {3, 2, 4, 1};
  std::vector<std::promise<InferOutcome>> done(rows.size());
  std::vector<std::vector<float>> inputs;
  for (size_t i = 0; i < rows.size(); ++i) {
    inputs.push_back(Pattern(rows[i] * 64, static_cast<int>(20 + i)));
    merged->Infer(inputs[i], rows[i], [&done, i](InferOutcome r) { done[i].set_value(std::move(r)); });
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    InferOutcome r = done[i].get_future().get();
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
    EXPECT_EQ(r.batch_rows, 10) << "request " << i;
    for (int row = 0; row < rows[i]; ++row) {
      auto ref = ReferenceLogits(
          a, std::vector<float>(inputs[i].begin() + row * 64, inputs[i].begin() + (row + 1) * 64));
      for (int k = 0; k < 5; ++k)
        EXPECT_NEAR(r.logits[row * 5 + k], ref[k], 1e-5) << "request " << i << ", row " << row;
    }
  }
}

TEST(BatchingTest, ConcurrentHttpRequestsAreMergedAndCorrect) {
  TempDir dir;
  const ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 6);
  ASSERT_EQ(Publish(dir.path(), "m", a), 1);
  // Per-model config.json overrides the server defaults.
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/m/config.json",
                              R"({"max_batch_size": 8, "max_queue_delay_us": 50000})").ok());
  ServerOptions so;
  so.threads = 4;
  ServerHarness h(dir.path(), so);
  constexpr int kClients = 8, kEach = 6;
  const ClientResults got = InferFromClients(h, a, kClients, kEach);
  const int failures = got.failures, merged = got.merged;
  EXPECT_EQ(failures, 0);
  // With 8 clients and a 50 ms window, most requests share a batch.
  EXPECT_GT(merged, kClients * kEach / 2) << merged;
  auto meta = json::parse(h.Client().Get("/v2/models/m")->body);
  EXPECT_EQ(meta["parameters"]["max_batch_size"], 8);
}

// A forming batch waits for more requests only while one may still come:
// with a single connection, whose request is already queued, it runs at once
// instead of waiting out the (here 2 s) queue delay.
TEST(BatchingTest, ALoneClientIsNotHeldForTheQueueDelay) {
  TempDir dir;
  const ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 7);
  ASSERT_EQ(Publish(dir.path(), "m", a), 1);
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/m/config.json",
                              R"({"max_batch_size": 8, "max_queue_delay_us": 2000000})").ok());
  ServerHarness h(dir.path(), ServerOptions{});
  HttpClient c = h.Client();
  for (int i = 0; i < 5; ++i) {
    const auto x = Pattern(64, i);
    auto r = c.Request("POST", "/v2/models/m/infer", InferBody(x, 1, kTinyInput).dump());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->status, 200) << r->body;
    json j = json::parse(r->body);
    EXPECT_EQ(j["parameters"]["batch_rows"], 1);
    // The server's own account of the wait: far below the 2 s window.
    EXPECT_LT(j["parameters"]["queue_time_us"].get<int64_t>(), 1'000'000) << r->body;
  }
}

// Greedy batching on one compute thread (the defaults): a request that
// finds the version idle runs on the caller's thread; with a queue delay or
// more compute threads it goes to the inference thread.
TEST(BatchingTest, AnIdleGreedyVersionRunsTheRequestOnTheCallersThread) {
  const ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 5);
  const auto x = Pattern(64, 4);
  const auto ref = ReferenceLogits(a, x);
  auto answered_on = [&](const BatchingOptions& o) {
    auto sv = Serve(a, o);
    std::thread::id on;
    InferOutcome got;
    bool called = false;
    sv->Infer(x, 1, [&](InferOutcome r) {
      on = std::this_thread::get_id();
      got = std::move(r);
      called = true;
    });
    if (!called) {  // answered by the inference thread: wait for it
      std::promise<InferOutcome> p;
      sv->Infer(x, 1, [&](InferOutcome r) {
        on = std::this_thread::get_id();
        p.set_value(std::move(r));
      });
      got = p.get_future().get();
    }
    EXPECT_TRUE(got.status.ok()) << got.status.ToString();
    for (int k = 0; k < 5 && got.status.ok(); ++k) EXPECT_NEAR(got.logits[k], ref[k], 1e-5);
    return on;
  };
  EXPECT_EQ(answered_on(BatchingOptions()), std::this_thread::get_id());
  BatchingOptions delayed;
  delayed.max_queue_delay_us = 1000;
  EXPECT_NE(answered_on(delayed), std::this_thread::get_id());
  BatchingOptions two;
  two.compute_threads = 2;
  EXPECT_NE(answered_on(two), std::this_thread::get_id());
}

// The case that once crashed (oneDNN's per-thread scratchpad): a recurrent
// model's networks, built on the inference thread, run on callers' threads
// that never built a primitive, alternating with the inference thread.
TEST(BatchingTest, ARecurrentModelRunsOnCallersThreads) {
  const nn::Shape input = {24, 4};
  const ModelArtifact a = MakeArtifact(R"(loss: MSE
       layer { type: "LSTM" recurrent_param { hidden_size: 16 num_layers: 2 } }
       layer { type: "Dense" dense_param { units: 1 } })", input, 9, 1.f, 0.f);
  auto sv = Serve(a, BatchingOptions());
  ASSERT_TRUE(sv);
  for (int t = 0; t < 3; ++t) {
    std::thread caller([&, t] {
      for (int i = 0; i < 5; ++i) {
        const auto x = Pattern(24 * 4, 10 * t + i);
        std::thread::id on;
        std::promise<InferOutcome> p;
        sv->Infer(x, 1, [&](InferOutcome r) {
          on = std::this_thread::get_id();
          p.set_value(std::move(r));
        });
        const InferOutcome got = p.get_future().get();
        ASSERT_TRUE(got.status.ok()) << got.status.ToString();
        EXPECT_EQ(on, std::this_thread::get_id()) << "a lone request runs on its caller's thread";
        EXPECT_NEAR(got.logits[0], ReferenceLogits(a, x)[0], 1e-5);
      }
    });
    caller.join();
  }
}

// Callers of a greedy version: while one runs a request on its own thread,
// the others' requests queue for the inference thread, which batches them;
// then all callers at once. Every answer is right and comes once.
TEST(BatchingTest, RequestsQueuedWhileACallerRunsAreBatchedByTheThread) {
  const ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 6);
  BatchingOptions o;
  o.max_batch_size = 4;
  auto sv = Serve(a, o);
  ASSERT_TRUE(sv);
  std::atomic<int> wrong{0}, answered{0}, merged{0};
  auto check = [&](const std::vector<float>& x, const InferOutcome& r) {
    answered++;
    if (!r.status.ok()) return void(wrong++);
    if (r.batch_rows > 1) merged++;
    const auto ref = ReferenceLogits(a, x);
    for (int k = 0; k < 5; ++k)
      if (std::fabs(r.logits[k] - ref[k]) > 1e-5) wrong++;
  };
  // The first request's callback (on this thread, the version still busy)
  // waits until 12 more requests are queued.
  std::atomic<int> queued{0};
  std::vector<std::promise<InferOutcome>> later(12);
  std::vector<std::vector<float>> later_x;
  for (int i = 0; i < 12; ++i) later_x.push_back(Pattern(64, 100 + i));
  std::thread other;
  const auto first_x = Pattern(64, 99);
  sv->Infer(first_x, 1, [&](InferOutcome r) {
    EXPECT_EQ(r.batch_rows, 1);
    check(first_x, r);
    other = std::thread([&] {
      for (int i = 0; i < 12; ++i) {
        sv->Infer(later_x[i], 1, [&later, i](InferOutcome q) { later[i].set_value(std::move(q)); });
        queued++;
      }
    });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (queued < 12 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  other.join();
  for (int i = 0; i < 12; ++i) check(later_x[i], later[i].get_future().get());
  EXPECT_EQ(merged.load(), 12) << "requests queued behind a running caller are batched";

  constexpr int kCallers = 6, kEach = 40;
  std::vector<std::thread> callers;
  for (int t = 0; t < kCallers; ++t)
    callers.emplace_back([&, t] {
      std::vector<std::future<InferOutcome>> pending;
      std::vector<std::vector<float>> inputs;
      for (int i = 0; i < kEach; ++i) {
        inputs.push_back(Pattern(64, 1000 * t + i));
        auto p = std::make_shared<std::promise<InferOutcome>>();
        pending.push_back(p->get_future());
        sv->Infer(inputs.back(), 1, [p](InferOutcome r) { p->set_value(std::move(r)); });
      }
      for (int i = 0; i < kEach; ++i) check(inputs[i], pending[i].get());
    });
  for (auto& c : callers) c.join();
  EXPECT_EQ(answered.load(), 13 + kCallers * kEach);
  EXPECT_EQ(wrong.load(), 0);
}

// Two instances run two batches at once: a request queued while the first
// instance's callback holds its thread is answered by the second. With one
// instance it waits for the first (the control).
TEST(InstancesTest, TwoInstancesRunTwoBatchesAtOnce) {
  const ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 5);
  auto second_answered_meanwhile = [&](int64_t instances) {
    BatchingOptions o;
    o.instances = instances;
    auto sv = Serve(a, o);
    std::promise<InferOutcome> second;
    auto got = second.get_future();
    std::promise<bool> meanwhile;
    const auto x2 = Pattern(64, 2);
    sv->Infer(Pattern(64, 1), 1, [&](InferOutcome first) {
      EXPECT_TRUE(first.status.ok()) << first.status.ToString();
      sv->Infer(x2, 1, [&](InferOutcome r) { second.set_value(std::move(r)); },
                CallerRuns::kNever);
      // Blocks this instance's thread: only another instance can answer.
      meanwhile.set_value(got.wait_for(std::chrono::milliseconds(instances > 1 ? 30'000 : 300)) ==
                          std::future_status::ready);
    }, CallerRuns::kNever);
    const bool answered = meanwhile.get_future().get();
    const InferOutcome r = got.get();
    EXPECT_TRUE(r.status.ok()) << r.status.ToString();
    const auto ref = ReferenceLogits(a, x2);
    for (int k = 0; k < 5 && r.status.ok(); ++k) EXPECT_NEAR(r.logits[k], ref[k], 1e-5);
    return answered;
  };
  EXPECT_TRUE(second_answered_meanwhile(2));
  EXPECT_FALSE(second_answered_meanwhile(1));
}

// A caller that will run its request later (kLater) is left the queue: the
// inference threads do not take it, and its RunQueued runs everything queued
// meanwhile as one batch, on its own thread, before it returns.
TEST(InstancesTest, ACallerThatRunsLaterRunsWhatQueuedMeanwhileAsOneBatch) {
  const ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 6);
  BatchingOptions o;
  o.instances = 2;
  auto sv = Serve(a, o);
  ASSERT_TRUE(sv);
  std::vector<std::vector<float>> x;
  std::vector<InferOutcome> got(3);
  std::vector<std::thread::id> on(3);
  std::atomic<int> answered{0};
  for (int i = 0; i < 3; ++i) {
    x.push_back(Pattern(64, 20 + i));
    EXPECT_TRUE(sv->Infer(x[i], 1, [&, i](InferOutcome r) {
      got[i] = std::move(r);
      on[i] = std::this_thread::get_id();
      answered++;
    }, CallerRuns::kLater));
  }
  // A request refused at once leaves nothing to run.
  EXPECT_FALSE(sv->Infer(x[0], 99, [](InferOutcome r) { EXPECT_FALSE(r.status.ok()); },
                         CallerRuns::kLater));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(answered.load(), 0) << "the inference threads took requests left to their caller";
  sv->RunQueued();
  ASSERT_EQ(answered.load(), 3);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(got[i].status.ok()) << got[i].status.ToString();
    EXPECT_EQ(got[i].batch_rows, 3);
    EXPECT_EQ(on[i], std::this_thread::get_id());
    const auto ref = ReferenceLogits(a, x[i]);
    for (int k = 0; k < 5; ++k) EXPECT_NEAR(got[i].logits[k], ref[k], 1e-5);
  }
  sv->RunQueued();  // the two other promises: nothing is left to run
  sv->RunQueued();
  EXPECT_EQ(answered.load(), 3);
  // Once every caller has run, the inference threads take requests again.
  std::promise<InferOutcome> p;
  sv->Infer(x[0], 1, [&](InferOutcome r) { p.set_value(std::move(r)); }, CallerRuns::kNever);
  EXPECT_TRUE(p.get_future().get().status.ok());
}

// Callers on several threads, each way of running mixed, on three
// instances; then the version is dropped with requests still queued. Every
// request is answered once, right.
TEST(InstancesTest, EveryRequestIsAnsweredOnceRightHoweverItRuns) {
  const ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 7);
  BatchingOptions o;
  o.instances = 3;
  o.max_batch_size = 4;
  auto sv = Serve(a, o);
  ASSERT_TRUE(sv);
  constexpr int kCallers = 6, kEach = 60;
  std::atomic<int> wrong{0}, answered{0};
  std::vector<std::vector<float>> inputs;
  std::vector<std::vector<float>> refs;
  for (int i = 0; i < kEach; ++i) {
    inputs.push_back(Pattern(64, 500 + i));
    refs.push_back(ReferenceLogits(a, inputs.back()));
  }
  std::vector<std::thread> callers;
  for (int t = 0; t < kCallers; ++t)
    callers.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        const auto how = static_cast<CallerRuns>((t + i) % 3);
        const bool owes_run = sv->Infer(inputs[i], 1, [&, i](InferOutcome r) {
          answered++;
          if (!r.status.ok()) return void(wrong++);
          for (int k = 0; k < 5; ++k)
            if (std::fabs(r.logits[k] - refs[i][k]) > 1e-5) wrong++;
        }, how);
        EXPECT_EQ(owes_run, how == CallerRuns::kLater);
        if (owes_run) sv->RunQueued();
      }
    });
  for (auto& c : callers) c.join();
  for (int i = 0; i < 20; ++i)
    sv->Infer(inputs[i], 1, [&, i](InferOutcome r) {
      answered++;
      if (!r.status.ok() || std::fabs(r.logits[0] - refs[i][0]) > 1e-5) wrong++;
    }, CallerRuns::kNever);
  sv.reset();  // drains the queue, joins the three threads
  EXPECT_EQ(answered.load(), kCallers * kEach + 20);
  EXPECT_EQ(wrong.load(), 0);
}

TEST(InstancesTest, BadInstanceCountsAreRefusedWithOneLine) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() + "/m");
  const std::string path = dir.path() + "/m/config.json";
  for (const char* bad : {R"({"instances": 0})", R"({"instances": 65})", R"({"instances": "2"})"}) {
    ASSERT_TRUE(WriteFileAtomic(path, bad).ok());
    auto r = ReadModelConfig(dir.path(), "m", BatchingOptions{});
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().ToString();
    EXPECT_NE(r.status().message().find("instances"), std::string::npos) << r.status().ToString();
  }
  ASSERT_TRUE(WriteFileAtomic(path, R"({"instances": 4})").ok());
  auto r = ReadModelConfig(dir.path(), "m", BatchingOptions{});
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->instances, 4);
}

// Over HTTP with two I/O threads and an instance for each: each I/O thread
// runs the batches of what it read. Answers are right, and the metrics count
// every request.
TEST(InstancesTest, HttpIoThreadsRunTheirOwnBatches) {
  TempDir dir;
  const ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 8);
  ASSERT_EQ(Publish(dir.path(), "m", a), 1);
  ServerOptions so;
  so.threads = 2;
  so.batching.instances = 2;
  ServerHarness h(dir.path(), so);
  constexpr int kClients = 8, kEach = 25;
  EXPECT_EQ(InferFromClients(h, a, kClients, kEach).failures, 0);
  const std::string metrics = h.Client().Get("/metrics")->body;
  EXPECT_NE(metrics.find("outcome=\"success\"} " + std::to_string(kClients * kEach) + "\n"),
            std::string::npos)
      << metrics.substr(0, 2000);
  auto meta = json::parse(h.Client().Get("/v2/models/m")->body);
  EXPECT_EQ(meta["parameters"]["instances"], 2);
  // Named threads (top -H): two I/O threads, an inference thread an instance.
  std::map<std::string, int> names;
  for (const auto& t : std::filesystem::directory_iterator("/proc/self/task")) {
    auto comm = ReadFile(t.path().string() + "/comm");
    if (comm.ok()) names[comm->substr(0, comm->find('\n'))]++;
  }
  EXPECT_EQ(names["infer/m"], 2);
  EXPECT_EQ(names["rest/0"], 1);
  EXPECT_EQ(names["rest/1"], 1);
}

// The value of a series in Prometheus text ("" labels: none), -1 when absent.
double MetricValue(const std::string& text, const std::string& series) {
  const std::string key = series + " ";
  for (size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + 1))
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + key.size()));
  return -1;
}

// A process confined to one CPU (taskset, a cpuset): an inference thread
// could only take turns with the I/O thread on that CPU, so the one I/O
// thread runs every batch itself, also under load, and the answers are
// still right.
TEST(InstancesTest, OnOneCpuTheIoThreadRunsEveryBatch) {
  cpu_set_t all, one;
  ASSERT_EQ(sched_getaffinity(0, sizeof(all), &all), 0);
  CPU_ZERO(&one);
  CPU_SET(sched_getcpu(), &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);  // this thread, and those it starts
  TempDir dir;
  const ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 8);
  ASSERT_EQ(Publish(dir.path(), "m", a), 1);
  ServerOptions so;
  so.threads = 1;
  auto h = std::make_unique<ServerHarness>(dir.path(), so);
  ASSERT_EQ(sched_setaffinity(0, sizeof(all), &all), 0);  // the clients run anywhere
  constexpr int kClients = 6, kEach = 30;
  EXPECT_EQ(InferFromClients(*h, a, kClients, kEach).failures, 0);
  const std::string metrics = h->Client().Get("/metrics")->body;
  const std::string l = "{model=\"m\",version=\"1\"}";
  const double batches = MetricValue(metrics, "polis_inference_batch_rows_count" + l);
  EXPECT_GE(batches, 1);
  EXPECT_LE(batches, kClients * kEach);
  EXPECT_EQ(MetricValue(metrics, "polis_inference_caller_batches_total" + l), batches)
      << metrics.substr(0, 3000);
}

TEST(ExplainTest, LinearModelHasClosedFormAttributions) {
  // f(x) = W x + b: gradient of logit c is W[c], so both saliency and
  // integrated gradients (zero baseline) are x * W[c], for any step count.
  const ModelArtifact a = MakeArtifact(kLinear, {4}, 7);
  auto sv = Serve(a, BatchingOptions());
  const std::vector<float> x = {0.5f, -1.f, 2.f, 0.25f};
  ExplainRequest req;
  req.input = x;
  req.rows = 1;
  req.targets = {2};
  req.steps = 8;
  ExplainOutcome o = sv->Explain(req);
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  ASSERT_EQ(o.rows.size(), 1u);
  const ExplainRow& r = o.rows[0];
  EXPECT_EQ(r.target, 2);
  const float* w = a.weights.data() + 2 * 4;  // weights are (out, in)
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(r.saliency[i], x[i] * w[i], 1e-5) << i;
    EXPECT_NEAR(r.integrated_gradients[i], x[i] * w[i], 1e-5) << i;
  }
  EXPECT_NEAR(r.convergence_delta, 0.0, 1e-4);
  // The predicted class when no target is given.
  req.targets = {-1};
  o = sv->Explain(req);
  const auto ref = ReferenceLogits(a, x);
  EXPECT_EQ(o.rows[0].target, std::max_element(ref.begin(), ref.end()) - ref.begin());
  // Bad requests are refused before they are queued.
  req.targets = {3};
  EXPECT_EQ(sv->Explain(req).status.code(), Code::kInvalidArgument);
  req.targets = {0};
  req.steps = 0;
  EXPECT_EQ(sv->Explain(req).status.code(), Code::kInvalidArgument);
}

// Several explanation workers on a recurrent model: each builds its own
// Networks (oneDNN's library scratchpad is per thread; the LSTM's training
// primitives need one), so concurrent explanations all answer.
TEST(ExplainTest, SeveralWorkersExplainARecurrentModel) {
  TempDir dir;
  const nn::Shape input = {24, 4};
  const ModelArtifact a = MakeArtifact(R"(loss: MSE
       layer { type: "LSTM" recurrent_param { hidden_size: 16 } }
       layer { type: "Dense" dense_param { units: 1 } })", input, 9, 1.f, 0.f);
  ASSERT_EQ(Publish(dir.path(), "lstm", a), 1);
  ServerOptions o;
  o.allow_anonymous_explain = true;
  o.explain.threads = 3;
  o.explain.max_queue = 16;
  ServerHarness h(dir.path(), o);
  std::atomic<int> answered{0};
  std::vector<std::string> failures(4);
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t)
    clients.emplace_back([&, t] {
      HttpClient c = h.Client();
      for (int i = 0; i < 4; ++i) {
        json body = InferBody(Pattern(24 * 4, 10 * t + i), 1, input);
        body["parameters"] = {{"steps", 4 + i % 2}};
        auto r = c.Request("POST", "/v2/models/lstm/explain", body.dump());
        if (!r.ok()) failures[t] = r.status().ToString();
        else if (r->status != 200) failures[t] = r->body;
        else answered++;
      }
    });
  for (auto& c : clients) c.join();
  for (const auto& f : failures) EXPECT_EQ(f, "");
  EXPECT_EQ(answered.load(), 16);
}

TEST(ExplainTest, IntegratedGradientsAreCompleteOnACnnOverHttp) {
  TempDir dir;
  const ModelArtifact a = MakeArtifact(kTinyCnn, kTinyInput, 8);
  ASSERT_EQ(Publish(dir.path(), "cnn", a), 1);
  ServerOptions o;
  o.allow_anonymous_explain = true;
  ServerHarness h(dir.path(), o);
  HttpClient c = h.Client();
  std::vector<float> x = Pattern(2 * 64, 3);
  json body = InferBody(x, 2, kTinyInput, "why-1");
  body["parameters"] = {{"steps", 128}, {"target", {1, 4}}};
  auto r = Call(c, "POST", "/v2/models/cnn/explain", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json j = ParseJson(r);
  EXPECT_EQ(j["id"], "why-1");
  ASSERT_EQ(j["explanations"].size(), 2u);
  for (int row = 0; row < 2; ++row) {
    const json& e = j["explanations"][row];
    EXPECT_EQ(e["target"], row == 0 ? 1 : 4);
    EXPECT_EQ(e["integrated_gradients"]["shape"], json({1, 8, 8}));
    EXPECT_EQ(e["integrated_gradients"]["steps"], 128);
    const auto ig = e["integrated_gradients"]["data"].get<std::vector<float>>();
    const auto sal = e["saliency"]["data"].get<std::vector<float>>();
    ASSERT_EQ(ig.size(), 64u);
    ASSERT_EQ(sal.size(), 64u);
    // Completeness: the attributions add up to logit(x) - logit(baseline).
    double sum = 0;
    for (float v : ig) sum += v;
    const double diff = e["logit"].get<double>() - e["baseline_logit"].get<double>();
    EXPECT_NEAR(sum, diff, 0.05 * std::fabs(diff) + 2e-3) << "row " << row;
    // The logit is the model's.
    std::vector<float> xr(x.begin() + row * 64, x.begin() + (row + 1) * 64);
    EXPECT_NEAR(e["logit"].get<float>(), ReferenceLogits(a, xr)[row == 0 ? 1 : 4], 1e-4);
  }
  // Saliency is gradient x input: check one element by central differences
  // on the reference forward pass.
  const json& e0 = j["explanations"][0];
  const auto sal = e0["saliency"]["data"].get<std::vector<float>>();
  std::vector<float> x0(x.begin(), x.begin() + 64);
  const int i = static_cast<int>(std::max_element(sal.begin(), sal.end(),
                                                  [](float p, float q) { return std::fabs(p) < std::fabs(q); }) -
                                 sal.begin());
  const float h_step = 1e-2f;
  auto xp = x0, xm = x0;
  xp[i] += h_step;
  xm[i] -= h_step;
  const double grad = (ReferenceLogits(a, xp)[1] - ReferenceLogits(a, xm)[1]) / (2 * h_step);
  EXPECT_NEAR(sal[i], x0[i] * grad, 1e-2 * std::fabs(sal[i]) + 1e-4);

  body["parameters"] = {{"target", 9}};
  auto bad = Call(c, "POST", "/v2/models/cnn/explain", body.dump());
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("parameters.target"), std::string::npos) << bad.body;
}

}  // namespace
}  // namespace polis::registry
