// polis-tune's library (launch/tune/): study checks (bad studies refused
// with the field named), the search space applied by reflection, the
// samplers, ASHA's promotion rule on a hand-worked example, and the study
// state's crash-safe file.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <set>

#include "common/fs.h"
#include "launch/tune/asha.h"
#include "launch/tune/sampler.h"
#include "launch/tune/study.h"
#include "launch/tune/study_state.h"

namespace polis::tune {
namespace {

using json = nlohmann::json;

const std::string kSeedJob = std::string(POLIS_SOURCE_DIR) + "/jobs/fashion_cnn_allreduce.pbtxt";

std::string Study(const std::string& params, const std::string& rest = "") {
  return "name: \"s\"\nbase_job: \"" + kSeedJob + "\"\n" + params +
         "\nobjective { metric: \"test_accuracy\" direction: MAXIMIZE }\nbudget { max_trials: 4 }\n" + rest;
}

StatusOr<LoadedStudy> Parse(const std::string& text) { return ParseStudyText(text, "study.pbtxt", "."); }

// A refused study: one line, naming the file and `field`.
void ExpectRefused(const std::string& text, const std::string& field, const std::string& why) {
  auto s = Parse(text);
  ASSERT_FALSE(s.ok()) << text;
  EXPECT_EQ(s.status().code(), Code::kInvalidArgument);
  const std::string& m = s.status().message();
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  EXPECT_NE(m.find("study.pbtxt"), std::string::npos) << m;
  EXPECT_NE(m.find(field), std::string::npos) << "expected the field '" << field << "' in: " << m;
  EXPECT_NE(m.find(why), std::string::npos) << "expected '" << why << "' in: " << m;
}

TEST(TuneStudy, AcceptsAGoodStudy) {
  auto s = Parse(Study(R"(param { field: "optimizer.learning_rate" log_uniform { min: 1e-4 max: 1e-2 } }
param { field: "training.batch_size" choice { value: "32" value: "64" } })",
                       "scheduler { type: ASHA reduction_factor: 3 grace_period: 1 max_epochs: 9 }"));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->max_epochs, 9);
  EXPECT_EQ(s->workers, 1);
  EXPECT_EQ(s->servers, 0);  // the base job is ALLREDUCE
  EXPECT_EQ(s->ranks(), 2);
  EXPECT_EQ(s->model_name, "fashion_cnn_allreduce");
}

TEST(TuneStudy, ExampleStudiesPassTheirChecks) {
  auto s = LoadStudyFile(std::string(POLIS_SOURCE_DIR) + "/jobs/fashion_cnn_study.pbtxt");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->spec.scheduler().type(), proto::SchedulerSpec::ASHA);
  EXPECT_EQ(RungEpochs(1, 3, s->max_epochs), (std::vector<int>{1, 3, 9}));
}

TEST(TuneStudy, UnknownFieldIsNamed) {
  // In the study file itself, and as a searched job field.
  ExpectRefused(Study(R"(param { field: "optimizer.learning_rate" uniform { min: 0.001 max: 0.01 } })") +
                    "parallelism: 3\n",
                "parallelism", "no field named");
  ExpectRefused(Study(R"(param { field: "optimizer.learning_rat" uniform { min: 0.001 max: 0.01 } })"),
                "optimizer.learning_rat", "has no field 'learning_rat'");
  ExpectRefused(Study(R"(param { field: "model.layer[99].dense_param.units" choice { value: "8" } })"),
                "model.layer[99]", "the base job has 8 'layer' entries");
  ExpectRefused(Study(R"(param { field: "training.epochs" choice { value: "3" } })"), "training.epochs",
                "scheduler.max_epochs");
}

TEST(TuneStudy, EmptyRangeIsNamed) {
  ExpectRefused(Study(R"(param { field: "optimizer.learning_rate" uniform { min: 0.01 max: 0.001 } })"),
                "uniform", "empty range");
  ExpectRefused(Study(R"(param { field: "training.batch_size" int_range { min: 64 max: 32 } })"), "int_range",
                "empty range");
  ExpectRefused(Study(R"(param { field: "training.batch_size" choice { } })"), "choice.value", "empty");
  ExpectRefused(Study(R"(param { field: "training.batch_size" uniform { min: 32.2 max: 32.8 } })"), "uniform",
                "no integer");
}

TEST(TuneStudy, LogUniformBoundMustBePositive) {
  ExpectRefused(Study(R"(param { field: "optimizer.learning_rate" log_uniform { min: 0 max: 0.01 } })"),
                "log_uniform.min", "must be > 0");
  ExpectRefused(Study(R"(param { field: "optimizer.learning_rate" log_uniform { min: -1 max: 0.01 } })"),
                "log_uniform.min", "must be > 0");
}

TEST(TuneStudy, ObjectiveMustBeReportedByTheJob) {
  auto text = Study(R"(param { field: "optimizer.learning_rate" uniform { min: 0.001 max: 0.01 } })");
  text.replace(text.find("test_accuracy"), 13, "test_rmse");
  ExpectRefused(text, "objective.metric", "'test_rmse' is not in the per-epoch rows of a classifier job");
  // Without a validation split the rows carry test_*, not val_*.
  text.replace(text.find("test_rmse"), 9, "val_accuracy");
  ExpectRefused(text, "objective.metric", "val_ metrics need the base job's validation split");
}

TEST(TuneStudy, ValidationSplitMeansValMetrics) {
  // A forecasting job with a validation split: each epoch is evaluated on it.
  const std::string dir = "/tmp/polis-tune-val-" + std::to_string(getpid());
  ASSERT_TRUE(MakeDirectories(dir).ok());
  std::string job = *ReadFile(std::string(POLIS_SOURCE_DIR) + "/jobs/bike_demand_lstm.pbtxt");
  ASSERT_NE(job.find("test_months: 3"), std::string::npos);
  job.replace(job.find("test_months: 3"), 14, "test_months: 3 validation_months: 2");
  ASSERT_TRUE(WriteFileAtomic(dir + "/job.pbtxt", job).ok());
  auto base = LoadJobFile(dir + "/job.pbtxt");
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  EXPECT_TRUE(HasValidationSplit(base->spec));
  EXPECT_EQ(ReportedMetrics(base->spec),
            (std::vector<std::string>{"train_loss", "val_loss", "val_mae", "val_rmse", "val_mape", "val_smape"}));
  std::string study = "name: \"s\"\nbase_job: \"job.pbtxt\"\n"
                      "param { field: \"optimizer.learning_rate\" uniform { min: 0.001 max: 0.01 } }\n"
                      "objective { metric: \"val_mae\" direction: MINIMIZE }\nbudget { max_trials: 2 }\n";
  auto ok = ParseStudyText(study, "study.pbtxt", dir);
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
  study.replace(study.find("val_mae"), 7, "test_mae");
  auto refused = ParseStudyText(study, "study.pbtxt", dir);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("'test_mae' is not in the per-epoch rows of a regression job with a "
                                            "validation split"),
            std::string::npos)
      << refused.status().message();
  std::system(("rm -rf " + dir).c_str());
}

TEST(TuneStudy, ValuesAreCheckedAgainstTheJobsRanges) {
  ExpectRefused(Study(R"(param { field: "optimizer.learning_rate" log_uniform { min: 0.001 max: 2000 } })"),
                "optimizer.learning_rate", "must be in (0, 1000]");
  ExpectRefused(Study(R"(param { field: "optimizer.type" choice { value: "ADAM" value: "RMSPROP" } })"),
                "choice.value[1]", "one of: ADAM, SGD, ADAMW");
  ExpectRefused(Study(R"(param { field: "optimizer.type" uniform { min: 0 max: 1 } })"), "uniform",
                "is an enum field (use choice)");
  ExpectRefused(Study(R"(param { field: "optimizer.learning_rate" uniform { min: 0.001 max: 0.01 } })",
                      "scheduler { type: ASHA grace_period: 10 max_epochs: 9 }"),
                "scheduler.grace_period", "must be in [1, max_epochs = 9]");
  std::string no_budget = Study(R"(param { field: "optimizer.learning_rate" uniform { min: 0.001 max: 0.01 } })");
  no_budget.replace(no_budget.find("budget { max_trials: 4 }"), 24, "");
  ExpectRefused(no_budget, "budget", "a RANDOM study needs max_trials");
}

TEST(TuneStudy, BadStudyFileExitsTwoWithOneLine) {
  const std::string dir = "/tmp/polis-tune-test-" + std::to_string(getpid());
  ASSERT_TRUE(MakeDirectories(dir).ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/bad.pbtxt",
                              Study(R"(param { field: "optimizer.learning_rate" log_uniform { min: 0 max: 1 } })"))
                  .ok());
  FILE* p = popen((std::string(POLIS_BINARY_DIR) + "/launch/polis-tune --check " + dir + "/bad.pbtxt 2>&1").c_str(), "r");
  std::string out;
  std::array<char, 512> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int st = pclose(p);
  EXPECT_EQ(WEXITSTATUS(st), 2) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_NE(out.find("log_uniform.min"), std::string::npos) << out;
  std::system(("rm -rf " + dir).c_str());
}

TEST(TuneSearchSpace, AppliesFieldsByReflection) {
  auto base = LoadJobFile(kSeedJob);
  ASSERT_TRUE(base.ok());
  proto::JobSpec job = base->spec;
  ASSERT_TRUE(ApplyParam(&job, "optimizer.learning_rate", json(0.0125)).ok());
  ASSERT_TRUE(ApplyParam(&job, "training.batch_size", json(128)).ok());
  ASSERT_TRUE(ApplyParam(&job, "optimizer.type", json("ADAMW")).ok());
  ASSERT_TRUE(ApplyParam(&job, "model.layer[6].dense_param.units", json(32)).ok());
  ASSERT_TRUE(ApplyParam(&job, "sync.verify_replicas", json(true)).ok());
  EXPECT_FLOAT_EQ(job.optimizer().learning_rate(), 0.0125f);
  EXPECT_EQ(job.training().batch_size(), 128);
  EXPECT_EQ(job.optimizer().type(), proto::OptimizerSpec::ADAMW);
  EXPECT_EQ(job.model().layer(6).dense_param().units(), 32);
  EXPECT_TRUE(job.sync().verify_replicas());
  // Wrong types and paths are named.
  Status s = ApplyParam(&job, "training.batch_size", json(1.5));
  EXPECT_NE(s.message().find("'training.batch_size' is an integer field"), std::string::npos) << s.message();
  s = ApplyParam(&job, "optimizer.type", json("NADAM"));
  EXPECT_NE(s.message().find("one of: ADAM, SGD, ADAMW"), std::string::npos) << s.message();
  s = ApplyParam(&job, "optimizer", json(1));
  EXPECT_NE(s.message().find("is a message"), std::string::npos) << s.message();
  s = ApplyParam(&job, "model.layer.type", json("Dense"));
  EXPECT_NE(s.message().find("'layer' is repeated"), std::string::npos) << s.message();
}

TEST(TuneSearchSpace, TrialJobIsNamedAndChecked) {
  auto st = Parse(Study(R"(param { field: "optimizer.learning_rate" uniform { min: 0.001 max: 0.01 } })",
                        "scheduler { max_epochs: 4 }"));
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  auto job = TrialJob(*st, {{"optimizer.learning_rate", json(0.005)}}, "0007");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(job->name(), "fashion_cnn_allreduce-t0007");
  EXPECT_EQ(job->training().epochs(), 4);
  EXPECT_FLOAT_EQ(job->optimizer().learning_rate(), 0.005f);
  // A value the job's rules refuse fails the trial, naming the field.
  auto bad = TrialJob(*st, {{"optimizer.learning_rate", json(-1.0)}}, "0008");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("optimizer.learning_rate"), std::string::npos);
}

LoadedStudy GridStudy() {
  auto st = Parse(Study(R"(sampler: GRID
param { field: "optimizer.type" choice { value: "ADAM" value: "ADAMW" } }
param { field: "training.batch_size" int_range { min: 16 max: 64 step: 16 } }
param { field: "optimizer.learning_rate" log_uniform { min: 1e-4 max: 1e-2 grid_points: 3 } })"));
  EXPECT_TRUE(st.ok()) << st.status().ToString();
  return *st;
}

TEST(TuneSampler, GridCoversTheSpaceExactly) {
  const LoadedStudy st = GridStudy();
  Sampler grid(st);
  ASSERT_EQ(grid.Size(), 2 * 4 * 3);
  std::set<std::string> seen;
  for (int64_t i = 0; i < grid.Size(); ++i) {
    auto p = grid.Sample(i);
    ASSERT_TRUE(p.has_value());
    ASSERT_EQ(p->size(), 3u);
    seen.insert((*p)[0].value.dump() + " " + (*p)[1].value.dump() + " " + ParamText((*p)[2].value));
  }
  std::set<std::string> want;
  for (const char* type : {"\"ADAM\"", "\"ADAMW\""})
    for (int bs : {16, 32, 48, 64})
      for (const char* lr : {"0.0001", "0.001", "0.01"}) want.insert(std::string(type) + " " + std::to_string(bs) + " " + lr);
  EXPECT_EQ(seen, want);
  EXPECT_FALSE(grid.Sample(grid.Size()).has_value());
}

// The seed job with its Adam-only settings left out, so that an SGD trial
// is a valid job.
std::string OptimizerFreeJob() {
  auto text = ReadFile(kSeedJob);
  EXPECT_TRUE(text.ok());
  std::string job = *text;
  const size_t at = job.find("\noptimizer {");
  job.replace(at + 1, job.find('\n', at + 1) - at - 1, "optimizer { learning_rate: 0.001 }");
  const std::string path = ::testing::TempDir() + "/optimizer_free_job.pbtxt";
  EXPECT_TRUE(WriteFileAtomic(path, job).ok());
  return path;
}

std::string ConditionalStudy(const std::string& sampler, const std::string& momentum_when) {
  return "name: \"s\"\nbase_job: \"" + OptimizerFreeJob() + "\"\nsampler: " + sampler + R"(
param { field: "optimizer.type" choice { value: "ADAM" value: "ADAMW" value: "SGD" } }
param { field: "optimizer.momentum" choice { value: "0.5" value: "0.9" } )" + momentum_when + R"( }
param { field: "optimizer.nesterov" choice { value: "true" } when { field: "optimizer.momentum" value: "0.5" value: "0.9" } }
param { field: "optimizer.learning_rate" log_uniform { min: 1e-4 max: 1e-2 grid_points: 2 } }
objective { metric: "test_accuracy" direction: MAXIMIZE }
budget { max_trials: 40 })";
}

const char kWhenSgd[] = R"(when { field: "optimizer.type" value: "SGD" })";

TEST(TuneStudy, ConditionsAreChecked) {
  ASSERT_TRUE(Parse(ConditionalStudy("GRID", kWhenSgd)).ok()) << Parse(ConditionalStudy("GRID", kWhenSgd)).status().ToString();
  // Without its condition, momentum is refused on the Adam trials. Nesterov
  // (which needs momentum) is checked under momentum's condition and its own.
  ExpectRefused(ConditionalStudy("GRID", ""), "optimizer.momentum", "optimizer.type SGD");
  ExpectRefused(ConditionalStudy("GRID", R"(when { field: "optimizer.nesterov" value: "true" })"), "when.field",
                "not a param listed before");
  ExpectRefused("name: \"s\"\nbase_job: \"" + OptimizerFreeJob() + R"("
param { field: "optimizer.learning_rate" log_uniform { min: 1e-4 max: 1e-2 } }
param { field: "optimizer.momentum" choice { value: "0.5" } when { field: "optimizer.learning_rate" value: "1" } }
objective { metric: "test_accuracy" direction: MAXIMIZE }
budget { max_trials: 4 })",
                "when.field", "must be searched by choice");
  ExpectRefused(ConditionalStudy("GRID", R"(when { field: "optimizer.type" })"), "when.value", "empty");
  ExpectRefused(ConditionalStudy("GRID", R"(when { field: "optimizer.type" value: "RMSPROP" })"), "when.value[0]",
                "not one of the values of optimizer.type");
  ExpectRefused(ConditionalStudy("GRID", R"(when { value: "SGD" })"), "when.field", "required");
}

TEST(TuneSampler, GridEnumeratesAConditionalParamOnlyWhereItApplies) {
  auto st = Parse(ConditionalStudy("GRID", kWhenSgd));
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  Sampler grid(*st);
  // ADAM, ADAMW: 2 learning rates each; SGD: 2 momenta x 2 learning rates.
  ASSERT_EQ(grid.Size(), 2 + 2 + 4);
  std::set<std::string> seen;
  for (int64_t i = 0; i < grid.Size(); ++i) {
    const Params p = *grid.Sample(i);
    ASSERT_EQ(p.size(), 4u);
    const bool sgd = p[0].value == "SGD";
    EXPECT_EQ(p[1].value.is_null(), !sgd) << i;
    EXPECT_EQ(p[2].value.is_null(), !sgd) << i;
    seen.insert(p[0].value.dump() + p[1].value.dump() + ParamText(p[3].value));
    auto job = TrialJob(*st, p, "0000");
    ASSERT_TRUE(job.ok()) << job.status().ToString();
    EXPECT_EQ(job->optimizer().has_momentum(), sgd);
    EXPECT_EQ(job->optimizer().nesterov(), sgd);
  }
  EXPECT_EQ(seen.size(), 8u);
  EXPECT_FALSE(grid.Sample(grid.Size()).has_value());
}

TEST(TuneSampler, RandomConditionalParamIsNullWhereItDoesNotApply) {
  auto with = Parse(ConditionalStudy("RANDOM", kWhenSgd));
  ASSERT_TRUE(with.ok()) << with.status().ToString();
  Sampler random(*with);
  int sgd = 0;
  for (int i = 0; i < 300; ++i) {
    const Params p = *random.Sample(i);
    const bool is_sgd = p[0].value == "SGD";
    sgd += is_sgd;
    EXPECT_EQ(p[1].value.is_null(), !is_sgd) << i;
    EXPECT_FALSE(p[3].value.is_null());  // unconditional
    EXPECT_EQ(ParamText(p[1].value), is_sgd ? ParamText(p[1].value) : "-");
    EXPECT_EQ(ParamExact(p[2].value), is_sgd ? "true" : "");
  }
  EXPECT_NEAR(sgd / 300.0, 1 / 3.0, 0.1);
}

TEST(TuneSampler, LogUniformDrawsWithinBoundsAndEvenlyInLog) {
  auto st = Parse(Study(R"(param { field: "optimizer.learning_rate" log_uniform { min: 1e-5 max: 1e-1 } }
param { field: "training.batch_size" log_uniform { min: 8 max: 512 } })"));
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  Sampler random(*st);
  EXPECT_EQ(random.Size(), -1);
  int below_geometric_mean = 0, n = 4000;
  for (int i = 0; i < n; ++i) {
    const Params p = *random.Sample(i);
    const double lr = p[0].value.get<double>();
    ASSERT_GE(lr, 1e-5);
    ASSERT_LE(lr, 1e-1);
    if (lr < 1e-3) ++below_geometric_mean;  // half the draws in a log-uniform
    ASSERT_TRUE(p[1].value.is_number_integer()) << p[1].value;  // an integer field stays integer
    ASSERT_GE(p[1].value.get<int>(), 8);
    ASSERT_LE(p[1].value.get<int>(), 512);
  }
  EXPECT_NEAR(below_geometric_mean / double(n), 0.5, 0.04);
}

TEST(TuneSampler, SeededDrawsAreReproducible) {
  const std::string params = R"(param { field: "optimizer.learning_rate" log_uniform { min: 1e-5 max: 1e-1 } }
param { field: "training.batch_size" choice { value: "32" value: "64" value: "128" } })";
  auto a = Parse(Study(params, "seed: 7"));
  auto b = Parse(Study(params, "seed: 7"));
  auto c = Parse(Study(params, "seed: 8"));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  Sampler sa(*a), sb(*b), sc(*c);
  int differ = 0;
  for (int i = 9; i >= 0; --i) {  // order does not matter: trial i is a function of (seed, i)
    EXPECT_EQ(*sa.Sample(i), *sb.Sample(i)) << i;
    if (!(*sa.Sample(i) == *sc.Sample(i))) ++differ;
  }
  EXPECT_GE(differ, 9);
}

TEST(TuneAsha, RungEpochs) {
  EXPECT_EQ(RungEpochs(1, 3, 9), (std::vector<int>{1, 3, 9}));
  EXPECT_EQ(RungEpochs(1, 3, 3), (std::vector<int>{1, 3}));
  EXPECT_EQ(RungEpochs(1, 3, 10), (std::vector<int>{1, 3, 9, 10}));
  EXPECT_EQ(RungEpochs(2, 2, 8), (std::vector<int>{2, 4, 8}));
  EXPECT_EQ(RungEpochs(5, 3, 5), (std::vector<int>{5}));
}

// Worked by hand, eta = 3, maximising. Results arrive at rung 0 one at a
// time; a trial is promotable when it is in the top floor(n/3) of rung 0's n
// results and has not left rung 0 yet. Higher rungs are looked at first.
TEST(TuneAsha, PromotionRuleHandWorkedExample) {
  std::vector<std::vector<RungResult>> rungs(3);
  std::vector<std::set<int>> promoted(3);
  auto next = [&]() { return NextPromotion(rungs, promoted, 3, /*maximize=*/true); };
  rungs[0] = {{0, 0.50}, {1, 0.70}};
  EXPECT_FALSE(next());  // floor(2/3) = 0: nobody yet
  rungs[0].push_back({2, 0.60});
  auto p = next();  // floor(3/3) = 1: the top one, trial 1 (0.70)
  ASSERT_TRUE(p);
  EXPECT_EQ(p->trial, 1);
  EXPECT_EQ(p->to_rung, 1);
  promoted[0].insert(1);
  EXPECT_FALSE(next());  // trial 1 has left; the top 1 is still only trial 1
  rungs[0].push_back({3, 0.90});
  rungs[0].push_back({4, 0.10});
  EXPECT_FALSE(next() && next()->trial != 3);  // floor(5/3) = 1: trial 3 (0.90) now leads
  ASSERT_TRUE(next());
  EXPECT_EQ(next()->trial, 3);
  promoted[0].insert(3);
  EXPECT_FALSE(next());  // top 1 of 5 is trial 3, promoted; trial 1 is second
  rungs[0].push_back({5, 0.80});
  p = next();  // floor(6/3) = 2: top two are 3 (0.90) and 5 (0.80); 3 has left
  ASSERT_TRUE(p);
  EXPECT_EQ(p->trial, 5);
  promoted[0].insert(5);
  EXPECT_FALSE(next());  // trial 1 (0.70) is third: not in the top two
  // Rung 1 fills: trial 3 leads three results and goes to rung 2, looked at
  // before rung 0.
  rungs[1] = {{1, 0.72}, {3, 0.91}, {5, 0.85}};
  p = next();
  ASSERT_TRUE(p);
  EXPECT_EQ(p->trial, 3);
  EXPECT_EQ(p->to_rung, 2);
  promoted[1].insert(3);
  EXPECT_FALSE(next());
  // The top rung never promotes.
  rungs[2] = {{3, 0.93}, {1, 0.1}, {5, 0.2}};
  EXPECT_FALSE(next());
}

TEST(TuneAsha, MinimisingAndTies) {
  std::vector<std::vector<RungResult>> rungs(2);
  std::vector<std::set<int>> promoted(2);
  rungs[0] = {{0, 0.30}, {1, 0.20}, {2, 0.20}, {3, 0.90}, {4, 0.25}, {5, 0.40}};
  auto p = NextPromotion(rungs, promoted, 3, /*maximize=*/false);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->trial, 1);  // tie at 0.20: the lower index first
  promoted[0].insert(1);
  p = NextPromotion(rungs, promoted, 3, false);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->trial, 2);
  promoted[0].insert(2);
  EXPECT_FALSE(NextPromotion(rungs, promoted, 3, false));
}

TEST(TuneState, RoundTripsAndRefusesADamagedFile) {
  StudyState s;
  s.name = "s";
  s.study_dir = "/tmp/x";
  s.objective = "test_accuracy";
  s.sampler = "RANDOM";
  s.scheduler = "ASHA";
  s.rungs = {1, 3};
  s.max_epochs = 3;
  for (int i = 0; i < 3; ++i) {
    Trial t;
    t.index = i;
    t.id = fmt::format("{:04d}", i);
    t.params = {{"optimizer.learning_rate", json(0.001 * (i + 1))}, {"optimizer.type", json("ADAM")}};
    t.state = i == 0 ? "completed" : (i == 1 ? "paused" : "running");
    t.rung = i == 0 ? 1 : 0;
    t.rung_values = {0.5 + i * 0.1};
    t.curve = {{1, 0.5 + i * 0.1}};
    if (i == 0) {
      t.curve.push_back({2, 0.8});
      t.curve.push_back({3, 0.85});
    }
    t.epochs_done = static_cast<int>(t.curve.size());
    t.target_epochs = i == 2 ? 1 : t.epochs_done;
    s.trials.push_back(t);
  }
  const std::string dir = "/tmp/polis-tune-state-" + std::to_string(getpid());
  ASSERT_TRUE(MakeDirectories(dir).ok());
  ASSERT_TRUE(WriteStudyState(dir, s).ok());
  auto back = ReadStudyState(dir);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(StudyJson(*back), StudyJson(s));
  EXPECT_EQ(BestTrial(*back), 0);
  EXPECT_EQ(EpochsCommitted(*back), 3 + 1 + 1);
  std::vector<std::vector<RungResult>> rungs;
  std::vector<std::set<int>> promoted;
  RungTables(*back, &rungs, &promoted);
  EXPECT_EQ(rungs[0].size(), 3u);
  EXPECT_EQ(promoted[0], std::set<int>{0});
  const std::string csv = StudyCsv(*back);
  EXPECT_EQ(csv.substr(0, csv.find('\n')),
            "trial,state,rung,epochs,optimizer.learning_rate,optimizer.type,test_accuracy,best,run_dir,error");
  EXPECT_NE(csv.find("0000,completed,1,3,0.001,ADAM,0.85,1"), std::string::npos) << csv;
  // A trial that stopped itself early (completed at rung 0) is never promoted.
  StudyState early = *back;
  early.trials[1].state = "completed";
  RungTables(early, &rungs, &promoted);
  EXPECT_EQ(promoted[0], (std::set<int>{0, 1}));
  // The kept model's epoch (restore_best) gives the trial's value.
  Trial kept = back->trials[0];
  kept.kept_epoch = 2;
  EXPECT_DOUBLE_EQ(kept.final_value(), 0.8);
  // One changed byte: refused, naming the file.
  std::string text = *ReadFile(dir + "/study.json");
  text.replace(text.find("0.85"), 4, "0.95");
  ASSERT_TRUE(WriteFileAtomic(dir + "/study.json", text).ok());
  auto damaged = ReadStudyState(dir);
  ASSERT_FALSE(damaged.ok());
  EXPECT_EQ(damaged.status().code(), Code::kDataLoss);
  EXPECT_NE(damaged.status().message().find("checksum"), std::string::npos);
  std::system(("rm -rf " + dir).c_str());
}

TEST(TuneState, ObjectiveCurveFromMetricsRows) {
  const std::string dir = "/tmp/polis-tune-rows-" + std::to_string(getpid());
  ASSERT_TRUE(MakeDirectories(dir).ok());
  // Epoch 2 written twice (an attempt cut short): the last row counts; a
  // torn last line is skipped; epochs past the rung are not read.
  ASSERT_TRUE(WriteFileAtomic(dir + "/metrics.jsonl",
                              "{\"epoch\": 1, \"test_accuracy\": 0.5, \"train_loss\": 1.2}\n"
                              "{\"epoch\": 2, \"test_accuracy\": 0.6, \"train_loss\": 1.0}\n"
                              "{\"epoch\": 2, \"test_accuracy\": 0.65, \"train_loss\": 0.9}\n"
                              "{\"epoch\": 3, \"test_accuracy\": 0.7, \"train_loss\": 0.8}\n"
                              "{\"epoch\": 4, \"test_acc")
                  .ok());
  std::vector<std::pair<int, double>> curve;
  std::string error;
  ASSERT_TRUE(ReadObjectiveCurve(dir, "test_accuracy", 2, &curve, &error)) << error;
  EXPECT_EQ(curve, (std::vector<std::pair<int, double>>{{1, 0.5}, {2, 0.65}}));
  ASSERT_TRUE(ReadObjectiveCurve(dir, "train_loss", 9, &curve, &error)) << error;
  EXPECT_EQ(curve.size(), 3u);
  // A metric the rows do not carry (val_accuracy before a validation split): one clear line.
  EXPECT_FALSE(ReadObjectiveCurve(dir, "val_accuracy", 3, &curve, &error));
  EXPECT_EQ(error, "metrics.jsonl epoch 1 has no 'val_accuracy' (its row has: epoch, test_accuracy, train_loss)");
  // No file yet: an empty curve.
  ASSERT_TRUE(ReadObjectiveCurve(dir + "/none", "test_accuracy", 3, &curve, &error));
  EXPECT_TRUE(curve.empty());
  std::system(("rm -rf " + dir).c_str());
}

}  // namespace
}  // namespace polis::tune
