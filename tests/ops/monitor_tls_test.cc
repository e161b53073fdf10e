// The monitoring API over TLS (docs/operations.md, "TLS"), with certificates
// made at test time (tests/tls_certs.h):
//  - in process: the address is https://, /api/status answers over HTTPS
//    with the CA trusted and a client without it fails verification; the
//    plain port serves reads but refuses stop and checkpoint with 403 and
//    the line naming the https address, even with the right token, and
//    queues nothing; over HTTPS the token works; bad files and a plain port
//    without TLS fail Start naming the file / the flag;
//  - a real polis-train job (polis-run ... -- --monitor-tls-cert ...):
//    /api/status over HTTPS, polisctl --cacert status, a stop over plain
//    HTTP refused, then polisctl --cacert stop ends the job; a key that is
//    not the certificate's is refused before any process starts.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "common/http/http_client.h"
#include "coordinator/monitor.h"
#include "tests/ops/ops_test_util.h"
#include "tests/prereq.h"
#include "tests/tls_certs.h"

namespace polis::coordinator {
namespace {

using json = nlohmann::json;
using ops_test::kBin;
using ops_test::kPolisctl;
using ops_test::kSrc;
using ops_test::PortOf;
using ops_test::ReadOrEmpty;
using ops_test::Shell;
using ops_test::ShellRun;
using ops_test::TempDir;

constexpr char kToken[] = "monitor-tls-token";

http::HttpClient Https(int port, const std::string& ca) {
  return http::HttpClient("127.0.0.1", port, 10000, http::ClientTls{true, ca});
}

std::vector<std::pair<std::string, std::string>> Bearer(const std::string& token) {
  return {{"Authorization", "Bearer " + token}};
}

class MonitorTls : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::HaveOpenssl()) POLIS_MISSING_PREREQ() << "the openssl CLI is not installed (launch/install-deps.sh)";
    certs_ = test::MakeTestCerts(dir_.path());
    ASSERT_EQ(certs_.error, "");
  }
  Monitor::Options TlsOptions() const {
    Monitor::Options o;
    o.token = kToken;
    o.dashboard_dir = kSrc + "/launch/dashboard";
    o.tls_cert_file = certs_.server_cert;
    o.tls_key_file = certs_.server_key;
    o.plain_listen = "127.0.0.1:0";
    return o;
  }

  TempDir dir_;
  test::TestCerts certs_;
};

TEST_F(MonitorTls, HttpsServesAndThePlainPortRefusesCommands) {
  auto m = Monitor::Start(TlsOptions());
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  Monitor& mon = **m;
  ASSERT_EQ(mon.address().rfind("https://127.0.0.1:", 0), 0u) << mon.address();
  ASSERT_EQ(mon.plain_address().rfind("http://127.0.0.1:", 0), 0u) << mon.plain_address();
  const int port = PortOf(mon.address()), plain_port = PortOf(mon.plain_address());
  mon.Publish(ops_test::SampleStatus());

  http::HttpClient c = Https(port, certs_.ca);
  auto status = c.Request("GET", "/api/status");
  ASSERT_TRUE(status.ok()) << status.status().ToString();
  EXPECT_EQ(status->status, 200) << status->body;
  EXPECT_EQ(json::parse(status->body, nullptr, false)["job"], ops_test::SampleStatus()["job"]);

  http::HttpClient untrusted = Https(port, certs_.other_ca);
  auto refused = untrusted.Request("GET", "/api/status");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("TLS certificate verification"), std::string::npos)
      << refused.status().message();

  http::HttpClient plain("127.0.0.1", plain_port, 10000);
  auto plain_status = plain.Request("GET", "/api/status");
  ASSERT_TRUE(plain_status.ok()) << plain_status.status().ToString();
  EXPECT_EQ(plain_status->status, 200);
  for (const char* command : {"/api/stop", "/api/checkpoint"})
    for (const std::string& token : {std::string(kToken), std::string("wrong")}) {
      SCOPED_TRACE(std::string(command) + " " + token);
      auto r = plain.Request("POST", command, "", Bearer(token));
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(r->status, 403) << r->body;
      EXPECT_NE(http::ErrorMessage(*r).find("use https on the TLS port (" + mon.address() + command + ")"),
                std::string::npos)
          << r->body;
    }
  EXPECT_TRUE(mon.TakeCommands().empty());

  auto stop = c.Request("POST", "/api/stop", "", Bearer(kToken));
  ASSERT_TRUE(stop.ok()) << stop.status().ToString();
  EXPECT_EQ(stop->status, 202) << stop->body;
  auto wrong = c.Request("POST", "/api/stop", "", Bearer("wrong"));
  ASSERT_TRUE(wrong.ok());
  EXPECT_EQ(wrong->status, 403);
  EXPECT_EQ(mon.TakeCommands(), std::vector<Monitor::Command>{Monitor::Command::kStop});
}

TEST_F(MonitorTls, BadFilesAndAPlainPortWithoutTlsFailStart) {
  Monitor::Options o = TlsOptions();
  o.tls_key_file = certs_.other_key;
  auto mismatch = Monitor::Start(o);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("'" + certs_.other_key + "' does not match the certificate"),
            std::string::npos)
      << mismatch.status().ToString();
  o = TlsOptions();
  o.tls_cert_file = dir_.path() + "/missing.pem";
  auto missing = Monitor::Start(o);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find(o.tls_cert_file), std::string::npos) << missing.status().ToString();
  o = TlsOptions();
  o.tls_cert_file.clear();
  o.tls_key_file.clear();
  auto no_tls = Monitor::Start(o);
  ASSERT_FALSE(no_tls.ok());
  EXPECT_NE(no_tls.status().message().find("needs TLS"), std::string::npos) << no_tls.status().ToString();
}

TEST_F(MonitorTls, RealJobOverHttpsRefusesAStopOverPlainHttp) {
  if (!PathExists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed (dataset-fashion-mnist)";
  const std::string run = dir_.path() + "/run";
  // A key that is not the certificate's: refused by polis-run's check, before any process starts.
  ShellRun bad = Shell("POLIS_NO_BUILD=1 POLIS_BUILD_DIR=" + kBin + " " + kSrc + "/launch/polis-run --workers 1 " +
                       "--servers 1 --run-dir " + dir_.path() + "/bad " + kSrc + "/jobs/fashion_cnn.pbtxt -- " +
                       "--monitor-tls-cert " + certs_.server_cert + " --monitor-tls-key " + certs_.other_key);
  EXPECT_EQ(bad.exit_code, 2) << bad.output << bad.errors;
  EXPECT_EQ(bad.errors, "polis-train: --monitor-tls-cert/--monitor-tls-key: the TLS private key '" +
                            certs_.other_key + "' does not match the certificate '" + certs_.server_cert + "'\n");
  ShellRun job;
  std::atomic<bool> ended{false};
  // A slowed worker (200 ms a step) keeps the job running until it is stopped.
  const std::string cmd =
      "POLIS_TEST_SLOW_WORKER=0:200 POLIS_NO_BUILD=1 POLIS_BUILD_DIR=" + kBin + " " + kSrc +
      "/launch/polis-run --workers 1 --servers 1 --epochs 1 --registry " + dir_.path() + "/registry --run-dir " +
      run + " " + kSrc + "/jobs/fashion_cnn.pbtxt -- --train-limit 20000 --test-limit 200 --monitor 127.0.0.1:0 " +
      "--monitor-tls-cert " + certs_.server_cert + " --monitor-tls-key " + certs_.server_key +
      " --monitor-plain-listen 127.0.0.1:0";
  std::thread t([&] {
    job = Shell(cmd);
    ended = true;
  });
  // Whatever fails below, the job is stopped (SIGTERM) and waited for.
  struct Joiner {
    std::thread& t;
    std::string stop;
    ~Joiner() {
      if (!t.joinable()) return;
      Shell(stop);
      t.join();
    }
  } joiner{t, kPolisctl + " --run-dir " + run + " stop --signal"};
  json info;
  int status_code = 0;
  std::string body;
  for (int i = 0; i < 600 && !ended && status_code != 200; ++i) {  // up to ~60 s
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    info = json::parse(ReadOrEmpty(run + "/coordinator.json"), nullptr, false);
    if (info.is_discarded() || info.value("address", "").empty()) continue;
    auto r = Https(PortOf(info.value("address", "")), certs_.ca).Request("GET", "/api/status");
    if (r.ok()) status_code = r->status, body = r->body;
  }
  ASSERT_EQ(status_code, 200) << body << cmd << "\n" << job.output << job.errors;
  EXPECT_EQ(info.value("address", "").rfind("https://", 0), 0u) << info;
  EXPECT_EQ(json::parse(body, nullptr, false)["job"], "fashion_cnn") << body;

  const std::string ctl = kPolisctl + " --cacert " + certs_.ca + " --run-dir " + run;
  ShellRun st = Shell(ctl + " status --json");
  EXPECT_EQ(st.exit_code, 0) << st.output << st.errors;

  const std::string token = ReadOrEmpty(run + "/monitor.token").substr(0, 64);
  ASSERT_FALSE(token.empty());
  http::HttpClient plain("127.0.0.1", PortOf(info.value("plain_address", "")), 10000);
  auto refused = plain.Request("POST", "/api/stop", "", Bearer(token));
  ASSERT_TRUE(refused.ok()) << refused.status().ToString() << info;
  EXPECT_EQ(refused->status, 403) << refused->body;
  EXPECT_NE(http::ErrorMessage(*refused).find("use https on the TLS port"), std::string::npos) << refused->body;

  ShellRun stop = Shell(ctl + " stop");
  EXPECT_EQ(stop.exit_code, 0) << stop.output << stop.errors;
  t.join();
  EXPECT_EQ(job.exit_code, 0) << job.output << job.errors;
}

}  // namespace
}  // namespace polis::coordinator
