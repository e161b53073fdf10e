// `polisctl cluster` without real jobs (launch/cluster_view.h): the jobs
// directory's records (a stale one among them), squeue's output, how a
// record's state is decided from its launcher, Slurm and its coordinator,
// and the tables.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include "common/fs.h"
#include "launch/cluster_view.h"
#include "tests/ops/ops_test_util.h"

namespace polis::ctl {
namespace {

using json = nlohmann::json;

json Record(const std::string& run_dir, const std::string& state, const std::string& launcher = "mpirun") {
  return {{"format", "polis-job/1"}, {"job", "fashion_cnn"}, {"run_dir", run_dir},
          {"run_id", std::filesystem::path(run_dir).filename().string()}, {"launcher", launcher},
          {"pid", 4242}, {"launch_host", "here"}, {"slurm_job_id", ""}, {"hosts", json::array({"here"})},
          {"workers", 2}, {"servers", 1}, {"started_at", UtcTimestamp()}, {"state", state},
          {"updated_at", UtcTimestamp()}};
}

void Write(const std::string& path, const json& doc) { ASSERT_TRUE(WriteFileAtomic(path, doc.dump()).ok()); }

// A status document with two hosts' figures.
json Status() {
  return {{"job", "fashion_cnn"}, {"state", "running"}, {"epoch", 2}, {"epochs", 4}, {"eta_seconds", 30.0},
          {"elapsed_seconds", 10.0}, {"stragglers", json::array({3})}, {"stalled", json::array()},
          {"hosts", json::array({{{"host", "here"}, {"ranks", json::array({{{"rank", 0}, {"role", "coordinator"}},
                                                                          {{"rank", 3}, {"role", "worker"}}})},
                                  {"cpu_percent", 55.0}, {"memory_used_bytes", 1 << 20},
                                  {"memory_total_bytes", 4 << 20}, {"net_rx_bytes_per_second", 2048.0},
                                  {"net_tx_bytes_per_second", 1024.0}, {"sample_age_seconds", 0.5},
                                  {"gpus", json::array()}},
                                 {{"host", "there"}, {"ranks", json::array({{{"rank", 1}, {"role", "server"}},
                                                                           {{"rank", 2}, {"role", "worker"}}})},
                                  {"cpu_percent", 12.0}, {"sample_age_seconds", 0.7}, {"gpus", json::array()}}})}};
}

Probes Fake(bool alive, StatusOr<json> status, StatusOr<std::string> squeue = NotFound("no squeue")) {
  Probes p;
  p.launcher_alive = [alive](int) { return alive; };
  p.status = [status](const std::string&) { return status; };
  p.squeue = [squeue]() { return squeue; };
  p.this_host = "here";
  return p;
}

TEST(ClusterView, ParsesSqueue) {
  auto jobs = ParseSqueue("101|RUNNING|1:02|2|node[1-2]|polis-fashion_cnn\n102|PENDING|0:00|1||polis-x|y\n\n");
  ASSERT_TRUE(jobs.ok()) << jobs.status().ToString();
  ASSERT_EQ(jobs->size(), 2u);
  EXPECT_EQ((*jobs)[0].id, "101");
  EXPECT_EQ((*jobs)[0].state, "RUNNING");
  EXPECT_EQ((*jobs)[0].nodes, 2);
  EXPECT_EQ((*jobs)[0].nodelist, "node[1-2]");
  EXPECT_EQ((*jobs)[1].name, "polis-x|y") << "the name comes last and keeps its bars";
  auto bad = ParseSqueue("101|RUNNING|1:02|2|node1|ok\nsqueue: error: talking to slurmctld\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("squeue line 2"), std::string::npos) << bad.status().message();
  EXPECT_TRUE(ParseSqueue("").ok());
}

TEST(ClusterView, ReadsRecordsAndNamesTheUnreadableOnes) {
  ops_test::TempDir dir;
  Write(dir.path() + "/a.json", Record(dir.path() + "/runs/a", "running"));
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/b.json", "{\"run_dir\": ").ok());
  Write(dir.path() + "/c.json", json{{"job", "x"}});
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/notes.txt", "ignored").ok());
  JobsDir jd = ReadJobsDir(dir.path());
  ASSERT_EQ(jd.records.size(), 1u);
  EXPECT_EQ(jd.records[0]["record_path"], dir.path() + "/a.json");
  ASSERT_EQ(jd.problems.size(), 2u);
  EXPECT_NE(jd.problems[0].find("b.json: not a JSON object"), std::string::npos) << jd.problems[0];
  EXPECT_NE(jd.problems[1].find("c.json: no \"run_dir\""), std::string::npos) << jd.problems[1];
  EXPECT_TRUE(ReadJobsDir(dir.path() + "/none").problems.empty()) << "a missing directory holds no jobs";
}

// A running job: the coordinator's figures, ranks by host, progress.
TEST(ClusterView, RunningJobGetsItsHostsFromTheCoordinator) {
  ops_test::TempDir dir;
  const std::string run = dir.path() + "/runs/r1";
  ASSERT_TRUE(MakeDirectories(run).ok());
  Write(run + "/coordinator.json", {{"address", "http://127.0.0.1:1"}, {"host", "here"}, {"placement", json::array()}});
  Write(dir.path() + "/jobs-r1.json", Record(run, "running"));
  const json c = BuildCluster({dir.path(), 24, true}, Fake(true, Status()));
  ASSERT_EQ(c["jobs"].size(), 1u) << c.dump(2);
  const json& j = c["jobs"][0];
  EXPECT_EQ(j["state"], "running");
  EXPECT_EQ(j["epoch"], 2);
  EXPECT_DOUBLE_EQ(j["progress_percent"].get<double>(), 25.0);
  EXPECT_EQ(j["eta_seconds"], 30.0);
  EXPECT_EQ(j["hosts"], json::array({"here", "there"}));
  EXPECT_EQ(j["ranks"].size(), 4u);
  EXPECT_EQ(j["stragglers"], json::array({3}));
  ASSERT_EQ(c["hosts"].size(), 2u);
  EXPECT_EQ(c["hosts"][0]["host"], "here");
  EXPECT_EQ(c["hosts"][0]["cpu_percent"], 55.0);
  EXPECT_EQ(c["hosts"][0]["ranks"][1]["rank"], 3);
  EXPECT_EQ(c["hosts"][0]["ranks"][1]["run_id"], "r1");
  EXPECT_EQ(c["slurm"]["reason"], "squeue is not installed");

  const auto lines = ClusterTables(c);
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  EXPECT_NE(text.find("fashion_cnn  r1   running  here,there  4      2/4    25%       30s"), std::string::npos)
      << text;
  EXPECT_NE(text.find("here   fashion_cnn/r1:0c,3w  55%  1.0 MiB / 4.0 MiB  2.0 KiB/s  1.0 KiB/s  -"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("r1: straggler rank(s) [3]"), std::string::npos) << text;
}

// The launcher is gone and nothing recorded an end: lost, not running.
TEST(ClusterView, StaleRecordIsLost) {
  ops_test::TempDir dir;
  const std::string run = dir.path() + "/runs/r2";
  ASSERT_TRUE(MakeDirectories(run).ok());
  // A pid that surely is gone: a child that has exited and been reaped.
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  waitpid(pid, nullptr, 0);
  json rec = Record(run, "running");
  rec["pid"] = pid;
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  rec["launch_host"] = host;
  Write(dir.path() + "/r2.json", rec);
  const json c = BuildCluster({dir.path(), 24, false}, DefaultProbes(2));
  ASSERT_EQ(c["jobs"].size(), 1u) << c.dump(2);
  EXPECT_EQ(c["jobs"][0]["state"], "lost");
  EXPECT_EQ(c["jobs"][0]["reason"], fmt::format("polis-run (pid {}) is gone and recorded no end state", pid));
  EXPECT_TRUE(c["hosts"].empty()) << "a lost job carries no ranks";
  // With a result.json it left behind, the result's state.
  Write(run + "/result.json", {{"job", "fashion_cnn"}, {"state", "done"}, {"epochs", 3}, {"epochs_planned", 3}});
  const json after = BuildCluster({dir.path(), 24, false}, DefaultProbes(2));
  EXPECT_EQ(after["jobs"][0]["state"], "finished");
  EXPECT_EQ(after["jobs"][0]["progress_percent"], 100.0);
  EXPECT_EQ(after["jobs"][0]["epoch"], 3);
}

TEST(ClusterView, UnreachableCoordinatorIsSaidOnceAndNothingCrashes) {
  ops_test::TempDir dir;
  const std::string run = dir.path() + "/runs/r3";
  ASSERT_TRUE(MakeDirectories(run).ok());
  Write(run + "/coordinator.json", {{"address", "http://127.0.0.1:1"}, {"host", "here"}, {"placement", json::array()}});
  Write(dir.path() + "/r3.json", Record(run, "running"));
  // The real probe against a closed port.
  Probes p = DefaultProbes(2);
  p.launcher_alive = [](int) { return true; };
  p.this_host = "here";
  const json c = BuildCluster({dir.path(), 24, false}, p);
  ASSERT_EQ(c["jobs"].size(), 1u);
  EXPECT_EQ(c["jobs"][0]["state"], "unreachable");
  const std::string reason = c["jobs"][0]["reason"];
  EXPECT_NE(reason.find("coordinator at http://127.0.0.1:1 does not answer"), std::string::npos) << reason;
  // Its ranks still show on its host (from coordinator.json), without figures.
  ASSERT_EQ(c["hosts"].size(), 1u);
  EXPECT_EQ(c["hosts"][0]["ranks"].size(), 4u);
  EXPECT_TRUE(c["hosts"][0]["cpu_percent"].is_null());
  EXPECT_FALSE(ClusterTables(c).empty());
}

TEST(ClusterView, SlurmJobsFromSqueue) {
  ops_test::TempDir dir;
  json queued = Record(dir.path() + "/runs/q", "submitted", "slurm");
  queued["slurm_job_id"] = "7";
  queued["hosts"] = json::array();
  Write(dir.path() + "/q.json", queued);
  json gone = Record(dir.path() + "/runs/g", "submitted", "slurm");
  gone["slurm_job_id"] = "8";
  Write(dir.path() + "/g.json", gone);
  const json c = BuildCluster({dir.path(), 24, true},
                              Fake(false, NotFound("unused"),
                                   std::string("7|PENDING|0:00|1|(Resources)|polis-fashion_cnn\n"
                                               "9|RUNNING|0:05|2|n[1-2]|polis-by-hand\n"
                                               "10|RUNNING|0:05|1|n3|someone-else\n")));
  ASSERT_EQ(c["jobs"].size(), 3u) << c.dump(2);
  std::map<std::string, json> by_id;
  for (const auto& j : c["jobs"]) by_id[j["slurm_job_id"]] = j;
  EXPECT_EQ(by_id["7"]["state"], "queued");
  EXPECT_EQ(by_id["8"]["state"], "lost");
  EXPECT_EQ(by_id["8"]["reason"], "Slurm job 8 is no longer queued and left no result.json");
  EXPECT_EQ(by_id["9"]["state"], "running");
  EXPECT_EQ(by_id["9"]["hosts"], json::array({"n[1-2]"}));
  EXPECT_FALSE(by_id.count("10")) << "only polis jobs";
  // squeue that fails: said once, the record's state unknown.
  const json failed = BuildCluster({dir.path(), 24, true}, Fake(false, NotFound("unused"), Timeout("no answer in 3 s")));
  EXPECT_EQ(failed["jobs"][0]["state"], "unknown");
  EXPECT_EQ(failed["problems"][0], "squeue: no answer in 3 s");
}

TEST(ClusterView, EndedJobsAreListedForRecentHoursOnly) {
  ops_test::TempDir dir;
  json old = Record(dir.path() + "/runs/old", "finished");
  old["ended_at"] = "2020-01-01T00:00:00Z";
  Write(dir.path() + "/old.json", old);
  json failed = Record(dir.path() + "/runs/new", "failed");
  failed["ended_at"] = UtcTimestamp();
  failed["cause"] = "rank 3 (worker) exited on signal 9 (Killed)";
  Write(dir.path() + "/new.json", failed);
  const json c = BuildCluster({dir.path(), 24, false}, Fake(false, NotFound("unused")));
  ASSERT_EQ(c["jobs"].size(), 1u) << c.dump(2);
  EXPECT_EQ(c["jobs"][0]["state"], "failed");
  EXPECT_EQ(c["jobs"][0]["reason"], "rank 3 (worker) exited on signal 9 (Killed)");
}

}  // namespace
}  // namespace polis::ctl
