// Integration: Polis across hosts on an emulated cluster
// (launch/cluster/emucluster: one network namespace per host, real TCP over
// a bridge, links capped at 1 Gbit/s), started and torn down by each test.
// Training on 3 hosts must give the same model as on one host with the same
// number of workers and servers (two workers: a + b == b + a, whichever
// worker got which shard). Skips with emucluster's reason where namespaces
// cannot be made (not root, no iproute2).
#include <gtest/gtest.h>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "common/artifact/artifact.h"
#include "common/checkpoint.h"
#include "common/fs.h"
#include "tests/trace_check.h"
#include "tests/integration/emulated_cluster.h"
#include "tests/integration/shell.h"
#include "tests/prereq.h"

namespace polis {
namespace {

using namespace polis::it;

// The same bar as tests/integration/train_integration_test.cc (2 epochs on
// 6000 images; this network reaches about 0.77).
constexpr double kAccuracyBar = 0.70;
const std::string kLimits = " -- --train-limit 6000 --test-limit 2000";

class MultiHost : public FashionJobTest {
 protected:
  void SetUp() override {
    FashionJobTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    cluster_ = std::make_unique<EmulatedCluster>(dir_ + "/cluster", 3);
    POLIS_REQUIRE_CLUSTER_UP(cluster_);
  }
  void TearDown() override {
    cluster_.reset();
    FashionJobTest::TearDown();
  }
  // polis-run with the test's build, its output and result.json.
  nlohmann::json Train(const std::string& options, const std::string& name, std::string* output = nullptr) {
    ShellRun r = Shell("POLIS_NO_BUILD=1 " +
                       PolisRun(options + " --epochs 2 --registry " + dir_ + "/registry-" + name + " --run-dir " +
                                dir_ + "/" + name + kLimits));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    if (output != nullptr) *output = r.output;
    std::printf("[%s] %s", name.c_str(), r.output.substr(r.output.rfind("polis: done") == std::string::npos
                                                                 ? 0
                                                                 : r.output.rfind("polis: done")).c_str());
    return ReadJson(dir_ + "/" + name + "/result.json");
  }
  std::unique_ptr<EmulatedCluster> cluster_;
};

// The two runs end with the same model: bit-identical published weights and
// the same test metrics every epoch. The epoch's train_loss is the
// coordinator's mean of the workers' reports, summed in arrival order, so it
// may differ in the last bit.
void ExpectSameModel(const nlohmann::json& one_host, const nlohmann::json& hosts) {
  ASSERT_EQ(hosts["history"].size(), 2u) << hosts.dump();
  ASSERT_EQ(one_host["history"].size(), 2u) << one_host.dump();
  for (size_t e = 0; e < 2; ++e) {
    for (const char* key : {"test_loss", "test_accuracy", "train_samples"})
      EXPECT_EQ(hosts["history"][e][key], one_host["history"][e][key]) << key << " epoch " << e + 1;
    EXPECT_DOUBLE_EQ(hosts["history"][e]["train_loss"].get<double>(), one_host["history"][e]["train_loss"].get<double>());
  }
  EXPECT_GT(hosts["test_accuracy"].get<double>(), kAccuracyBar) << hosts.dump();
  auto a = ReadArtifactFile(one_host["artifact"]), b = ReadArtifactFile(hosts["artifact"]);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_TRUE(a->weights == b->weights) << "the published weights differ";
}

// coordinator.json's placement: rank -> host.
std::vector<std::string> PlacedHosts(const std::string& run_dir) {
  std::vector<std::string> hosts;
  const nlohmann::json coordinator = ReadJson(run_dir + "/coordinator.json");
  for (const auto& p : coordinator["placement"]) hosts.push_back(p["host"]);
  return hosts;
}

TEST_F(MultiHost, ParameterServersOnTwoHostsTrainTheSameModelAsOneHost) {
  const std::string counts = " --workers 2 --servers 2 ";
  auto one_host = Train(counts + kSrc + "/jobs/fashion_cnn.pbtxt", "one");
  std::string output;
  auto hosts = Train(cluster_->Options("--hostfile " + cluster_->hostfile()) + counts + kSrc +
                         "/jobs/fashion_cnn.pbtxt",
                     "three", &output);
  EXPECT_NE(output.find("rank  role"), std::string::npos) << output;
  const auto& a = cluster_->addresses();
  // Coordinator on the first host, one server on each of the others, the
  // workers in the first free slots: every push and pull crosses a link.
  EXPECT_EQ(PlacedHosts(dir_ + "/three"), (std::vector<std::string>{a[0], a[1], a[2], a[0], a[1]}));
  ExpectSameModel(one_host, hosts);
}

TEST_F(MultiHost, AllReduceAcrossHostsTrainsTheSameModelAsOneHost) {
  const std::string job = kSrc + "/jobs/fashion_cnn_allreduce.pbtxt";
  auto one_host = Train("--workers 2 " + job, "one");
  const auto& a = cluster_->addresses();
  // One slot a host: the coordinator and each worker on its own host.
  // One rank a host is a flat topology: kAuto picks the same algorithm as on
  // one host (never the hierarchical one), so the sums keep their order.
  auto hosts = Train(cluster_->Options("--hosts " + a[0] + ":1," + a[1] + ":1," + a[2] + ":1") + " --workers 2 " + job,
                     "three");
  EXPECT_EQ(PlacedHosts(dir_ + "/three"), (std::vector<std::string>{a[0], a[1], a[2]}));
  auto coordinator = ReadJson(dir_ + "/three/coordinator.json");
  EXPECT_EQ(coordinator["host"], a[0]);
  EXPECT_EQ(coordinator["address"].get<std::string>().rfind("http://" + a[0] + ":", 0), 0u) << coordinator.dump();
  ExpectSameModel(one_host, hosts);
}

// The hierarchical all-reduce with a bf16 wire on 2 hosts x 2 workers
// (inside each host over shared memory, across over TCP): its sum order
// differs from the flat one, so it is checked by accuracy, and by
// verify_replicas (every worker holds bit-identical parameters each step).
TEST_F(MultiHost, HierarchicalBf16AllReduceOnTwoHostsReachesTheBar) {
  const std::string job = JobVariant(dir_, "hier_bf16.pbtxt",
                                     {{"allreduce_algorithm: \"auto\"", "allreduce_algorithm: \"hier\""},
                                      {"compression: NONE", "compression: BF16 verify_replicas: true"}},
                                     "fashion_cnn_allreduce.pbtxt");
  const auto& a = cluster_->addresses();
  // The coordinator and two workers on the first host, two on the second.
  auto result = Train(cluster_->Options("--hosts " + a[0] + ":3," + a[1] + ":2") + " --workers 4 " + job, "hier");
  EXPECT_EQ(PlacedHosts(dir_ + "/hier"), (std::vector<std::string>{a[0], a[0], a[0], a[1], a[1]}));
  EXPECT_GT(result["test_accuracy"].get<double>(), kAccuracyBar) << result.dump();
}

// A host name that does not resolve, asked from inside an emulated host:
// it has no route to a DNS server, so the question never leaves it.
TEST_F(MultiHost, UnknownHostIsRefusedBeforeAnythingStarts) {
  const std::string run = dir_ + "/run";
  ShellRun r = Shell(cluster_->Exec("h1", "env POLIS_NO_BUILD=1 " +
                                              PolisRun("--hosts no-such-host.invalid:2 --workers 1 --servers 1 "
                                                       "--run-dir " + run + " " + kSrc + "/jobs/fashion_cnn.pbtxt")));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("polis-run: unknown host 'no-such-host.invalid'"), std::string::npos) << r.output;
  EXPECT_FALSE(PathExists(run));
}

// An address with no host behind it: polis-run tries the rsh agent on every
// other host first, as mpirun will, and names the one that fails.
TEST_F(MultiHost, UnreachableHostIsRefusedBeforeAnythingStarts) {
  const auto& a = cluster_->addresses();
  const std::string stray = a[0].substr(0, a[0].rfind('.')) + ".250";
  const std::string run = dir_ + "/run";
  ShellRun r = Shell("POLIS_NO_BUILD=1 " +
                     PolisRun(cluster_->Options("--hosts " + a[0] + ":2," + stray + ":2") +
                              " --workers 2 --servers 1 --registry " + dir_ + "/registry --run-dir " + run + " " +
                              kSrc + "/jobs/fashion_cnn.pbtxt"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("polis-run: host " + stray + " is unreachable: "), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_FALSE(PathExists(run));
  EXPECT_FALSE(PathExists(dir_ + "/registry"));
}

// A host's link cut mid-job (its veth brought down): mpirun's keepalive
// notices within about 25 s, polis-run names the host and the ranks it ran,
// and --max-restarts resumes from the newest checkpoint on the other hosts
// with as many workers as their slots allow; every sample of every epoch is
// still trained on exactly once. Before the cut, polisctl on another host
// reads the job's status over --net.
TEST_F(MultiHost, LinkCutNamesTheHostAndTheJobResumesOnTheOtherHosts) {
  const auto& a = cluster_->addresses();
  const std::string job = JobVariant(dir_, "job.pbtxt",
                                     {{"epochs: 5", "epochs: 2 checkpoint_every_steps: 100 keep_checkpoints: 100"}});
  const std::string run = dir_ + "/run";
  const std::string log = dir_ + "/polis-run.log";
  // Coordinator and a worker on h1, a server and a worker on h2, a server on h3.
  ShellRun started = Shell("POLIS_NO_BUILD=1 " +
                           PolisRun(cluster_->Options("--hostfile " + cluster_->hostfile()) +
                                    " --workers 2 --servers 2 --max-restarts 1 --registry " + dir_ +
                                    "/registry --run-dir " + run + " " + job +
                                    " -- --train-limit 30000 --test-limit 2000") +
                           " >" + log + " 2>&1 & echo $!");
  const int pid = std::atoi(started.output.c_str());
  ASSERT_GT(pid, 0) << started.output;
  auto waited = [](auto done, int seconds) {
    for (int i = 0; i < seconds * 5 && !done(); ++i) usleep(200 * 1000);
    return done();
  };
  ASSERT_TRUE(waited([&] { return Shell("ls " + run + "/checkpoints/*/manifest.json").exit_code == 0; }, 300))
      << *ReadFile(log);
  const std::string address = ReadJson(run + "/coordinator.json")["address"];
  ShellRun status = Shell(cluster_->Exec("h3", kBin + "/launch/polisctl --address " + address + " --json status"));
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("\"state\""), std::string::npos) << status.output;

  const std::string veth = ReadJson(dir_ + "/cluster/hosts.json")[2]["veth"];
  ASSERT_EQ(Shell("ip link set " + veth + " down").exit_code, 0);
  const auto cut = std::chrono::steady_clock::now();
  const std::string named = "host " + a[2] + " unreachable (mpirun lost its daemon there; it ran rank 2 (server))";
  const bool noticed = waited([&] { return ReadFile(log)->find(named) != std::string::npos; }, 180);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - cut).count();
  EXPECT_TRUE(noticed) << *ReadFile(log);
  std::printf("[link cut] noticed after %.1f s\n", seconds);
  // polis-run is not this process's child: wait for it to be gone.
  EXPECT_TRUE(waited([&] { return kill(pid, 0) != 0; }, 600)) << *ReadFile(log);
  const std::string out = *ReadFile(log);
  EXPECT_NE(out.find("on " + a[0] + ":2," + a[1] + ":2 with 1 worker(s)"), std::string::npos) << out;
  EXPECT_NE(out.find("polis-run: finished after 1 restart(s)"), std::string::npos) << out;
  // The restart ran on h1 and h2 only.
  for (const std::string& host : PlacedHosts(run)) EXPECT_NE(host, a[2]);
  const nlohmann::json restart = ReadJson(run + "/restarts.jsonl");
  EXPECT_EQ(restart.value("hosts", ""), a[0] + ":2," + a[1] + ":2") << restart.dump();
  EXPECT_EQ(restart.value("workers", 0), 1) << restart.dump();
  // The first epoch: the checkpoint's samples plus the resumed attempt's
  // (chaos_integration_test.cc checks the same sample by sample on one host).
  auto from = ReadManifest(restart.value("resume_from", ""));
  ASSERT_TRUE(from.ok()) << from.status().ToString();
  ASSERT_EQ(from->epoch, 0);
  int64_t consumed = 0;
  for (const auto& range : from->consumed) consumed += range.end - range.begin;
  const nlohmann::json result = ReadJson(run + "/result.json");
  ASSERT_EQ(result["history"].size(), 2u) << out;
  EXPECT_EQ(consumed + result["history"][0]["train_samples"].get<int64_t>(), 30000) << result.dump();
  EXPECT_EQ(result["history"][1]["train_samples"], 30000) << result.dump();
  EXPECT_GT(result["test_accuracy"].get<double>(), kAccuracyBar) << result.dump();
}

// Bad input without a cluster: one line naming the thing, exit 2, nothing
// started, nothing written.
class MultiHostBadInput : public FashionJobTest {
 protected:
  void ExpectRefused(const std::string& options, const std::string& expected) {
    const std::string run = dir_ + "/run";
    ShellRun r = Shell("POLIS_NO_BUILD=1 " + PolisRun(options + " --workers 2 --servers 1 --registry " + dir_ +
                                                      "/registry --run-dir " + run + " " + kSrc +
                                                      "/jobs/fashion_cnn.pbtxt"));
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find(expected), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
    EXPECT_FALSE(PathExists(run));
    EXPECT_FALSE(PathExists(dir_ + "/registry"));
  }
};

TEST_F(MultiHostBadInput, TooFewSlots) {
  ExpectRefused("--hosts 127.0.0.1:2,localhost:1",
                "too few slots: 1 coordinator, 1 server(s) and 2 worker(s) need 4; the hosts give 3");
}

TEST_F(MultiHostBadInput, MalformedHostfileLineNamesFileAndLine) {
  std::ofstream(dir_ + "/hosts") << "# two hosts\n127.0.0.1 slots=2\nlocalhost slots=two\n";
  ExpectRefused("--hostfile " + dir_ + "/hosts", dir_ + "/hosts:3: expected 'HOST slots=N'");
}

TEST_F(MultiHostBadInput, NetMatchingNoInterface) {
  ExpectRefused("--hosts 127.0.0.1:4 --net 10.254.253.0/24",
                "--net 10.254.253.0/24: no interface here has an address in it");
  ExpectRefused("--hosts 127.0.0.1:4 --net polis-no-such-if", "--net polis-no-such-if: no interface of that name");
}

TEST_F(MultiHostBadInput, HostfileAndHostsTogether) {
  std::ofstream(dir_ + "/hosts") << "127.0.0.1 slots=4\n";
  ExpectRefused("--hostfile " + dir_ + "/hosts --hosts 127.0.0.1:4", "--hostfile and --hosts: give one");
}

// Bad Slurm options (polis-run refuses them before sbatch; no Slurm needed).
TEST_F(MultiHostBadInput, SlurmNodesWithoutSlurm) {
  ExpectRefused("--nodes 2", "polis-run: --nodes needs --slurm");
}

TEST_F(MultiHostBadInput, SlurmWithHosts) {
  ExpectRefused("--slurm --hosts 127.0.0.1:4", "polis-run: --slurm and --hostfile/--hosts: Slurm chooses the nodes");
}

TEST_F(MultiHostBadInput, SlurmMoreNodesThanRanks) {
  ExpectRefused("--slurm --nodes 5", "polis-run: --nodes 5: more nodes than the job's 4 ranks");
}

TEST_F(MultiHostBadInput, SlurmNetOnOneNode) {
  ExpectRefused("--slurm --net 10.254.253.0/24", "polis-run: --net needs --hostfile, --hosts or --slurm --nodes N > 1");
}

// ---- No shared file system ------------------------------------------------
// Three hosts, each with private run, registry and dataset folders
// (emucluster --private: a mount namespace per host), so a rank that opened
// the run directory or the registry would see its own empty folder. Jobs are
// launched from the first host, where the coordinator runs; its private
// folders hold everything, the other hosts' stay empty.
class NoSharedFileSystem : public FashionJobTest {
 protected:
  void SetUp() override {
    FashionJobTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    runs_ = dir_ + "/runs";
    registry_ = dir_ + "/registry";
    data_ = dir_ + "/data";
    cluster_ = std::make_unique<EmulatedCluster>(dir_ + "/cluster", 3,
                                                 "--private " + runs_ + "," + registry_ + "," + data_);
    POLIS_REQUIRE_CLUSTER_UP(cluster_);
    // Every host its own copy of the dataset, at the same path.
    for (int h = 1; h <= 3; ++h)
      ASSERT_EQ(Shell("cp /usr/share/datasets/fashion-mnist/*.gz " + Private(h, data_)).exit_code, 0);
  }
  void TearDown() override {
    cluster_.reset();
    FashionJobTest::TearDown();
  }
  // Host h's own copy of `path`.
  std::string Private(int h, const std::string& path) const {
    return dir_ + "/cluster/hosts/h" + std::to_string(h) + "/private" + path;
  }
  // polis-run on the first host (the coordinator's), with its output; on
  // the hostfile's hosts (2 slots each) unless `hosts` says otherwise.
  ShellRun Run(const std::string& options, const std::string& hosts = "") {
    const std::string where = hosts.empty() ? "--hostfile " + cluster_->hostfile() : "--hosts " + hosts;
    return Shell(cluster_->Exec("h1", "env POLIS_NO_BUILD=1 POLIS_FASHION_MNIST_DIR=" + data_ + " " +
                                          PolisRun(cluster_->Options(where) + " " + options + " --registry " +
                                                   registry_ + kLimits)));
  }
  // The epoch-end checkpoint of a one-epoch run, on the first host; "" if none.
  std::string EpochEndCheckpoint(const std::string& run) const {
    std::string dir = Shell("ls -d " + Private(1, run) + "/checkpoints/step-*-end").output;
    return dir.empty() ? "" : dir.substr(0, dir.find('\n'));
  }
  static int FilesUnder(const std::string& path) {
    return std::atoi(Shell("find " + path + " -type f 2>/dev/null | wc -l").output.c_str());
  }
  // The run directory and the registry: files on the first host only.
  void ExpectOnlyTheCoordinatorsHostWrote(const std::string& run) {
    EXPECT_GT(FilesUnder(Private(1, run)), 0);
    EXPECT_GT(FilesUnder(Private(1, registry_)), 0);
    for (int h = 2; h <= 3; ++h) {
      EXPECT_EQ(FilesUnder(Private(h, runs_)), 0) << "host h" << h << " has files in the run directory";
      EXPECT_EQ(FilesUnder(Private(h, registry_)), 0) << "host h" << h << " has files in the registry";
    }
    EXPECT_EQ(FilesUnder(runs_), 0) << "the launching namespace's own folder was written";
  }
  // A refused start: exit 2, the one line, nothing published anywhere.
  void ExpectRefusedWith(const std::string& line) {
    ShellRun r = Run("--workers 2 --servers 2 --run-dir " + runs_ + "/bad " + kSrc + "/jobs/fashion_cnn.pbtxt");
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_NE(r.output.find("polis-train: FAILED_PRECONDITION: " + line), std::string::npos) << r.output;
    int mentions = 0;
    for (size_t at = r.output.find("dataset file"); at != std::string::npos; at = r.output.find("dataset file", at + 1))
      ++mentions;
    EXPECT_EQ(mentions, 1) << r.output;
    EXPECT_EQ(r.output.find("polis: job fashion_cnn"), std::string::npos) << "training started: " << r.output;
    for (int h = 1; h <= 3; ++h) EXPECT_EQ(FilesUnder(Private(h, registry_)), 0) << "host h" << h;
    EXPECT_FALSE(PathExists(Private(1, runs_ + "/bad/checkpoints")));
  }
  std::unique_ptr<EmulatedCluster> cluster_;
  std::string runs_, registry_, data_;
};

// Parameter servers on the second and third hosts send their shards to the
// coordinator, which writes the checkpoints; a resume reads them there and
// sends each server its range.
TEST_F(NoSharedFileSystem, ParameterServerJobCheckpointsPublishesAndResumes) {
  const std::string run = runs_ + "/ps";
  ShellRun r = Run("--workers 2 --servers 2 --epochs 1 --run-dir " + run + " " + kSrc + "/jobs/fashion_cnn.pbtxt");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string checkpoint = EpochEndCheckpoint(run);
  ASSERT_FALSE(checkpoint.empty()) << Shell("find " + Private(1, run)).output;
  for (const char* f : {"manifest.json", "server-0.shard", "server-1.shard"})
    EXPECT_TRUE(PathExists(checkpoint + "/" + f)) << f << "\n" << Shell("find " + Private(1, run)).output;
  // The second epoch starts from that checkpoint.
  r = Run("--workers 2 --servers 2 --epochs 2 --resume " + run);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("polis: resuming from " + run + "/checkpoints/" +
                           checkpoint.substr(checkpoint.rfind('/') + 1)), std::string::npos)
      << r.output;
  const nlohmann::json result = ReadJson(Private(1, run) + "/result.json");
  ASSERT_EQ(result["history"].size(), 2u) << result.dump();
  EXPECT_GT(result["test_accuracy"].get<double>(), kAccuracyBar) << result.dump();
  EXPECT_TRUE(PathExists(Private(1, registry_) + "/fashion_cnn/2"));
  ExpectOnlyTheCoordinatorsHostWrote(run);
}

// --timeline: every rank's events travel to the coordinator, which alone
// writes the file; ranks on other hosts carry the clock offset measured to
// the coordinator's clock (docs/timeline.md).
TEST_F(NoSharedFileSystem, TimelineTravelsToTheCoordinatorWithEachHostsClockOffset) {
  const std::string run = runs_ + "/tl", timeline = runs_ + "/timeline.json";
  ShellRun r = Run("--workers 2 --servers 2 --epochs 1 --timeline " + timeline + " --run-dir " + run + " " + kSrc +
                   "/jobs/fashion_cnn.pbtxt");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json doc = ReadJson(Private(1, timeline));
  ASSERT_TRUE(doc.is_object()) << Shell("ls -la " + Private(1, runs_)).output;
  for (int h = 2; h <= 3; ++h) EXPECT_FALSE(PathExists(Private(h, timeline))) << "host h" << h;
  std::map<int, std::string> names;
  std::map<int, nlohmann::json> clock;
  for (const auto& e : doc["traceEvents"]) {
    if (e["name"] == "process_name") names[e["pid"]] = e["args"]["name"];
    if (e["name"] == "clock_offset") clock[e["pid"]] = e["args"];
  }
  ASSERT_EQ(names.size(), 5u);
  ASSERT_EQ(clock.size(), 5u);
  const std::string first_host = " on " + cluster_->addresses()[0] + ")";
  for (const auto& [rank, name] : names) {
    // "rank 1 (server on 10.x.y.3)": ranks on the coordinator's host share its clock.
    const bool coordinators_host = name.size() > first_host.size() &&
                                   name.compare(name.size() - first_host.size(), first_host.size(), first_host) == 0;
    EXPECT_NE(name.find(" on "), std::string::npos) << name;
    const int64_t round_trip = clock[rank]["round_trip_ns"].get<int64_t>();
    if (coordinators_host) {
      EXPECT_EQ(round_trip, 0) << name;
    } else {
      EXPECT_GT(round_trip, 0) << name;
    }
  }
  std::string why;
  EXPECT_TRUE(test::SpansNest(doc, &why)) << why;
}

// All-reduce, one rank a host: the lead worker (second host) sends the
// replica's shard; at resume both workers get the parameters and the
// optimizer state from the coordinator.
TEST_F(NoSharedFileSystem, AllReduceJobCheckpointsPublishesAndResumes) {
  const std::string run = runs_ + "/allreduce";
  const std::string job = kSrc + "/jobs/fashion_cnn_allreduce.pbtxt";
  const auto& a = cluster_->addresses();
  const std::string hosts = a[0] + ":1," + a[1] + ":1," + a[2] + ":1";
  ShellRun r = Run("--workers 2 --epochs 1 --run-dir " + run + " " + job, hosts);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string checkpoint = EpochEndCheckpoint(run);
  ASSERT_FALSE(checkpoint.empty()) << Shell("find " + Private(1, run)).output;
  EXPECT_TRUE(PathExists(checkpoint + "/replica.shard"));
  r = Run("--workers 2 --epochs 2 --resume " + run, hosts);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json result = ReadJson(Private(1, run) + "/result.json");
  ASSERT_EQ(result["history"].size(), 2u) << result.dump();
  EXPECT_GT(result["test_accuracy"].get<double>(), kAccuracyBar) << result.dump();
  ExpectOnlyTheCoordinatorsHostWrote(run);
}

// training.restore_best: the workers evaluate the best epoch's parameters,
// which the coordinator reads from its checkpoint and sends them. The job
// file lies on the first host only: only the coordinator reads it.
TEST_F(NoSharedFileSystem, RestoreBestEvaluatesTheParametersTheCoordinatorSends) {
  const std::string variant = JobVariant(
      dir_, "best.pbtxt",
      {{"num_classes: 10", "num_classes: 10 validation_fraction: 0.1"},
       {"training { batch_size: 32 epochs: 5 seed: 42 }",
        "training { batch_size: 32 epochs: 4 seed: 42 keep_checkpoints: 1 restore_best: true "
        "early_stopping { metric: \"val_accuracy\" mode: MAX patience: 1 min_delta: 0.5 } }"}});
  ASSERT_EQ(Shell("cp " + variant + " " + Private(1, runs_) + "/best.pbtxt").exit_code, 0);
  const std::string run = runs_ + "/best";
  ShellRun r = Run("--workers 2 --servers 2 --run-dir " + run + " " + runs_ + "/best.pbtxt");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("(the best, restored from its checkpoint)"), std::string::npos) << r.output;
  const nlohmann::json result = ReadJson(Private(1, run) + "/result.json");
  EXPECT_TRUE(result["stopped_early"].get<bool>()) << result.dump();
  EXPECT_EQ(result["published_epoch"], 1);
  EXPECT_EQ(result["reloaded_test_accuracy"], result["test_accuracy"]);
  ExpectOnlyTheCoordinatorsHostWrote(run);
}

TEST_F(NoSharedFileSystem, DatasetMissingOnOneHostStopsTheJobNamingHostAndPath) {
  const std::string file = data_ + "/train-labels-idx1-ubyte.gz";
  ASSERT_EQ(std::remove(Private(3, file).c_str()), 0);
  ExpectRefusedWith("host " + cluster_->addresses()[2] + ": dataset file '" + file + "' is missing");
}

TEST_F(NoSharedFileSystem, DatasetDifferentOnOneHostStopsTheJobNamingHostAndPath) {
  const std::string file = data_ + "/t10k-labels-idx1-ubyte.gz";
  ASSERT_EQ(Shell("printf x | dd of=" + Private(2, file) + " bs=1 seek=100 conv=notrunc").exit_code, 0);
  ExpectRefusedWith("host " + cluster_->addresses()[1] + ": dataset file '" + file +
                    "' differs from the coordinator's copy on " + cluster_->addresses()[0]);
}

}  // namespace
}  // namespace polis
