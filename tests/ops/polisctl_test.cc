// The built polisctl binary against a Monitor on 127.0.0.1 (and against a
// run directory on disk): output, --json, tokens, exit codes.
#include <gtest/gtest.h>

#include <fstream>

#include "coordinator/monitor.h"
#include "launch/tune/study_server.h"
#include "tests/ops/ops_test_util.h"
#include "tests/ops/study_test_util.h"

namespace polis::coordinator {
namespace {

using ops_test::kPolisctl;
using ops_test::SampleStatus;
using ops_test::Shell;
using ops_test::ShellRun;
using json = nlohmann::json;

class Polisctl : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(PathExists(kPolisctl)) << kPolisctl << " is not built";
    Monitor::Options o;
    o.token = "tok-123";
    auto m = Monitor::Start(o);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    monitor_ = std::move(*m);
    monitor_->Publish(SampleStatus());
    // A run directory as the coordinator leaves it.
    json info = {{"pid", 1}, {"host", "nowhere"}, {"job", "fashion_cnn"}, {"run_dir", dir_.path()},
                 {"address", monitor_->address()}};
    std::ofstream(dir_.path() + "/coordinator.json") << info.dump(2);
  }

  ShellRun Ctl(const std::string& args) {
    // No token from the environment unless a test sets one.
    return Shell("env -u POLIS_MONITOR_TOKEN " + kPolisctl + " " + args);
  }
  std::string Addr() { return "--address " + monitor_->address(); }
  std::string RunDir() { return "--run-dir " + dir_.path(); }

  ops_test::TempDir dir_;
  std::unique_ptr<Monitor> monitor_;
};

TEST_F(Polisctl, StatusJsonIsThePublishedDocument) {
  auto r = Ctl("status --json " + Addr());
  ASSERT_EQ(r.exit_code, 0) << r.errors;
  EXPECT_EQ(json::parse(r.output), SampleStatus());
  // Options before the subcommand work too, and so does the run directory.
  auto via_dir = Ctl("--json " + RunDir() + " status");
  ASSERT_EQ(via_dir.exit_code, 0) << via_dir.errors;
  EXPECT_EQ(json::parse(via_dir.output), SampleStatus());
}

TEST_F(Polisctl, StatusForPeople) {
  auto r = Ctl("status " + RunDir());
  ASSERT_EQ(r.exit_code, 0) << r.errors;
  EXPECT_NE(r.output.find("job fashion_cnn  running"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("epoch 2/5"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("loss 0.4123"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("accuracy 85.20%"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("eta 3m05s"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("stragglers 2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("stalled 4"), std::string::npos) << r.output;
}

TEST_F(Polisctl, StatusOfAForecasterGivesItsMae) {
  monitor_->Publish(ops_test::SampleForecasterStatus());
  auto r = Ctl("status " + RunDir());
  ASSERT_EQ(r.exit_code, 0) << r.errors;
  EXPECT_NE(r.output.find("loss 0.4123  mae 55.85"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("accuracy"), std::string::npos) << r.output;
}

TEST_F(Polisctl, WorkersAndServers) {
  auto w = Ctl("workers --json " + Addr());
  ASSERT_EQ(w.exit_code, 0) << w.errors;
  EXPECT_EQ(json::parse(w.output), SampleStatus()["workers"]);
  auto table = Ctl("workers " + Addr());
  ASSERT_EQ(table.exit_code, 0) << table.errors;
  // Header and one row per worker rank; flags name the straggler and the stalled one.
  EXPECT_EQ(std::count(table.output.begin(), table.output.end(), '\n'), 4) << table.output;
  EXPECT_NE(table.output.find("straggler"), std::string::npos) << table.output;
  EXPECT_NE(table.output.find("stalled"), std::string::npos) << table.output;
  auto s = Ctl("servers --json " + Addr());
  ASSERT_EQ(s.exit_code, 0) << s.errors;
  EXPECT_EQ(json::parse(s.output), SampleStatus()["servers"]);
  auto st = Ctl("servers " + Addr());
  EXPECT_NE(st.output.find("[0, 50000)"), std::string::npos) << st.output;
  EXPECT_NE(st.output.find("117.7 MiB"), std::string::npos) << st.output;
}

TEST_F(Polisctl, TopRefreshesAndEndsWhenTheJobIsDone) {
  auto r = Ctl("top --json --iterations 2 --interval 0.1 " + Addr());
  ASSERT_EQ(r.exit_code, 0) << r.errors;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 2) << r.output;
  auto plain = Ctl("top --iterations 1 " + Addr());
  ASSERT_EQ(plain.exit_code, 0) << plain.errors;
  EXPECT_NE(plain.output.find("RANK"), std::string::npos) << plain.output;
  // State "done" ends top on its own, without --iterations.
  monitor_->Publish(SampleStatus(3, 1, 25, "done"));
  auto done = Ctl("top --json --interval 0.1 " + Addr());
  ASSERT_EQ(done.exit_code, 0) << done.errors;
  EXPECT_EQ(std::count(done.output.begin(), done.output.end(), '\n'), 1) << done.output;
}

TEST_F(Polisctl, TopEndsWhenTheCoordinatorGoes) {
  std::ofstream(dir_.path() + "/result.json") << "{}";
  // Stop the monitor while top runs: with result.json present that is the job's end.
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    monitor_.reset();
  });
  auto r = Ctl("top --json --interval 0.2 --timeout 2 " + RunDir());
  stopper.join();
  EXPECT_EQ(r.exit_code, 0) << r.errors;
  EXPECT_NE(r.output.find("the job has ended"), std::string::npos) << r.output;
}

TEST_F(Polisctl, CheckpointAndStopWithTokens) {
  auto none = Ctl("checkpoint " + Addr());
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.errors.find("401"), std::string::npos) << none.errors;
  auto wrong = Ctl("checkpoint --token nope " + Addr());
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.errors.find("403"), std::string::npos) << wrong.errors;
  EXPECT_TRUE(monitor_->TakeCommands().empty());

  auto ok = Ctl("checkpoint --token tok-123 " + Addr());
  EXPECT_EQ(ok.exit_code, 0) << ok.errors;
  auto env = Shell("POLIS_MONITOR_TOKEN=tok-123 " + kPolisctl + " stop --json " + Addr());
  EXPECT_EQ(env.exit_code, 0) << env.errors;
  EXPECT_EQ(json::parse(env.output)["accepted"], "stop");
  std::ofstream(dir_.path() + "/monitor.token") << "tok-123\n";
  auto file = Ctl("checkpoint " + RunDir());
  EXPECT_EQ(file.exit_code, 0) << file.errors;
  auto commands = monitor_->TakeCommands();
  ASSERT_EQ(commands.size(), 3u);
  EXPECT_EQ(commands[0], Monitor::Command::kCheckpoint);
  EXPECT_EQ(commands[1], Monitor::Command::kStop);
  EXPECT_EQ(commands[2], Monitor::Command::kCheckpoint);
}

TEST_F(Polisctl, Logs) {
  {
    std::ofstream out(dir_.path() + "/stdout.log");
    for (int i = 1; i <= 30; ++i) out << "out line " << i << "\n";
    std::ofstream(dir_.path() + "/stderr.log") << "err line 1\nerr line 2\n";
  }
  auto r = Ctl("logs -n 3 " + RunDir());
  ASSERT_EQ(r.exit_code, 0) << r.errors;
  EXPECT_NE(r.output.find("out line 28\nout line 29\nout line 30\n"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("out line 27"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("err line 1\nerr line 2\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("==> "), std::string::npos) << r.output;

  auto j = Ctl("logs --json -n 1 --stream stderr " + RunDir());
  ASSERT_EQ(j.exit_code, 0) << j.errors;
  EXPECT_EQ(json::parse(j.output), (json{{"stream", "stderr"}, {"line", "err line 2"}}));

  EXPECT_EQ(Ctl("logs " + Addr()).exit_code, 2);
  ops_test::TempDir empty;
  EXPECT_EQ(Ctl("logs --run-dir " + empty.path()).exit_code, 1);
}

TEST_F(Polisctl, ExitCodes) {
  EXPECT_EQ(Ctl("").exit_code, 2);
  EXPECT_EQ(Ctl("frobnicate").exit_code, 2);
  EXPECT_EQ(Ctl("status").exit_code, 2);  // no --run-dir / --address (and none in the cwd)
  EXPECT_EQ(Ctl("status " + Addr() + " " + RunDir()).exit_code, 2);
  EXPECT_EQ(Ctl("status --address ftp://x:1").exit_code, 1);
  EXPECT_EQ(Ctl("--help").exit_code, 0);
  // Nothing listens on a port we just freed.
  auto gone = Ctl("status --timeout 2 --address http://127.0.0.1:" + std::to_string(ops_test::FreePort()));
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_NE(gone.errors.find("cannot connect"), std::string::npos) << gone.errors;
  // A run directory whose coordinator serves no API.
  ops_test::TempDir other;
  std::ofstream(other.path() + "/coordinator.json") << R"({"pid": 1})";
  auto no_address = Ctl("status --run-dir " + other.path());
  EXPECT_EQ(no_address.exit_code, 1);
  EXPECT_NE(no_address.errors.find("no \"address\""), std::string::npos) << no_address.errors;
  EXPECT_EQ(Ctl("status --run-dir /nonexistent").exit_code, 1);
  // Before the first Publish the API answers 503: status fails (exit 1).
  auto fresh = Monitor::Start({});
  ASSERT_TRUE(fresh.ok());
  auto early = Ctl("status --address " + (*fresh)->address());
  EXPECT_EQ(early.exit_code, 1);
  EXPECT_NE(early.errors.find("not published"), std::string::npos) << early.errors;
}

TEST_F(Polisctl, StopBySignalChecksTheProcess) {
  // coordinator.json names pid 1 on host "nowhere": refused, nothing signalled.
  auto r = Ctl("stop --signal " + RunDir());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.errors.find("not here"), std::string::npos) << r.errors;
}

TEST_F(Polisctl, StopBySignalTermsTheCoordinatorProcess) {
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  auto write_info = [&](pid_t pid) {
    std::ofstream(dir_.path() + "/coordinator.json")
        << json{{"pid", pid}, {"host", host}, {"run_dir", dir_.path()}}.dump();
  };
  // Not a polis-train process: refused, left alone.
  const pid_t other = ops_test::Spawn({"sleep", "30"}, "/dev/null");
  write_info(other);
  auto refused = Ctl("stop --signal " + RunDir());
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.errors.find("no polis-train process"), std::string::npos) << refused.errors;
  EXPECT_EQ(kill(other, 0), 0) << "the other process was signalled";
  ops_test::StopProcess(other);
  // A process named polis-train gets SIGTERM.
  const pid_t coordinator = ops_test::Spawn({"bash", "-c", "exec -a polis-train sleep 30"}, "/dev/null");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // past bash's exec
  write_info(coordinator);
  auto r = Ctl("stop --signal --json " + RunDir());
  EXPECT_EQ(r.exit_code, 0) << r.errors;
  EXPECT_EQ(json::parse(r.output)["signalled"], coordinator);
  int status = 0;
  bool reaped = false;
  for (int i = 0; i < 200 && !reaped; ++i) {
    reaped = waitpid(coordinator, &status, WNOHANG) == coordinator;
    if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!reaped) status = ops_test::StopProcess(coordinator, 0);
  EXPECT_TRUE(reaped && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << "status " << status;
}

// `polisctl tune status` shows where polis-tune serves the study while it
// runs (tune.json), in text and in --json, and nothing once it has ended.
TEST(PolisctlTune, StatusShowsTheStudyPageWhileServed) {
  ops_test::TempDir dir;
  const tune::StudyState study = ops_test::SampleStudy(dir.path());
  ASSERT_TRUE(tune::WriteStudyState(dir.path(), study).ok());
  auto server = tune::StudyServer::Start("127.0.0.1:0", dir.path());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::string address = (*server)->address();

  ShellRun text = Shell(kPolisctl + " tune status " + dir.path());
  ASSERT_EQ(text.exit_code, 0) << text.errors;
  EXPECT_NE(text.output.find("study page: " + address + "/ (polis-tune pid " + std::to_string(getpid())),
            std::string::npos)
      << text.output;
  EXPECT_NE(text.output.find("best so far: trial 0001"), std::string::npos) << text.output;
  ShellRun as_json = Shell(kPolisctl + " --json tune status " + dir.path());
  ASSERT_EQ(as_json.exit_code, 0) << as_json.errors;
  json doc = json::parse(as_json.output);
  EXPECT_EQ(doc["monitor"].value("address", ""), address) << as_json.output;

  server->reset();  // polis-tune has ended
  text = Shell(kPolisctl + " tune status " + dir.path());
  EXPECT_EQ(text.output.find("study page:"), std::string::npos) << text.output;
  EXPECT_FALSE(json::parse(Shell(kPolisctl + " --json tune status " + dir.path()).output).contains("monitor"));
}

}  // namespace
}  // namespace polis::coordinator
