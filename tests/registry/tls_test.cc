// TLS on a real `polis-registry serve` process (docs/registry.md, "TLS"),
// with certificates made at test time (tests/tls_certs.h):
//  - HTTPS metadata and inference with the private CA trusted, by Polis'
//    own client (by name and by IP address), by polisctl --cacert or
//    POLIS_CA_FILE, and by Python's urllib/ssl;
//  - a client that does not trust the CA fails verification with one line
//    saying how to trust it; plain HTTP to the TLS port gets a plain 400
//    saying the port speaks HTTPS;
//  - the plain port answers reads and inference but refuses writes (publish,
//    promote) with 403 and the line naming the https port, whatever the
//    token, and the token is not logged;
//  - gRPC over TLS with Python's grpcio (grpc.ssl_channel_credentials);
//  - a missing, non-PEM or mismatched certificate or key fails start-up with
//    one line naming the file.
#include <signal.h>

#include <chrono>
#include <thread>

#include "common/fs.h"
#include "tests/prereq.h"
#include "tests/registry/registry_test_util.h"
#include "tests/tls_certs.h"

namespace polis::registry {
namespace {

using namespace testing;  // NOLINT

constexpr char kPython[] = "/usr/bin/python3";
constexpr char kAdminToken[] = "tls-admin-secret";

std::string ReadOrEmpty(const std::string& path) {
  auto text = ReadFile(path);
  return text.ok() ? *text : "";
}

int WaitForPortFile(const std::string& path) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    auto text = ReadFile(path);
    if (text.ok() && !text->empty()) return std::atoi(text->c_str());
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return 0;
}

class RegistryTls : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::HaveOpenssl()) POLIS_MISSING_PREREQ() << "the openssl CLI is not installed (launch/install-deps.sh)";
    ASSERT_TRUE(PathExists(kRegistryBin)) << kRegistryBin << " is not built";
    certs_ = test::MakeTestCerts(dir_.path());
    ASSERT_EQ(certs_.error, "");
    root_ = dir_.path() + "/root";
    art_ = MakeArtifact(kTinyCnn, kTinyInput, 7, 1.0f, 0.0f);
    ASSERT_EQ(Publish(root_, "cnn", art_), 1);
    tokens_ = dir_.path() + "/tokens.json";
    ASSERT_TRUE(WriteFileAtomic(tokens_, std::string(R"({"tokens": [{"name": "ops", "token": ")") +
                                             kAdminToken + R"(", "scopes": ["admin"]}]})")
                    .ok());
    log_ = dir_.path() + "/registry.log";
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      const std::string files = dir_.path();
      freopen(log_.c_str(), "w", stdout);
      freopen(log_.c_str(), "a", stderr);
      execl(kRegistryBin.c_str(), kRegistryBin.c_str(), "serve", "--root", root_.c_str(), "--listen",
            "127.0.0.1:0", "--port-file", (files + "/port").c_str(), "--plain-listen", "127.0.0.1:0",
            "--plain-port-file", (files + "/plain-port").c_str(), "--grpc-listen", "127.0.0.1:0",
            "--grpc-port-file", (files + "/grpc-port").c_str(), "--tls-cert", certs_.server_cert.c_str(),
            "--tls-key", certs_.server_key.c_str(), "--tokens", tokens_.c_str(), "--poll-ms", "50",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    port_ = WaitForPortFile(dir_.path() + "/port");
    ASSERT_GT(port_, 0) << "polis-registry serve did not write its port: " << ReadOrEmpty(log_);
    plain_port_ = WaitForPortFile(dir_.path() + "/plain-port");
    grpc_port_ = WaitForPortFile(dir_.path() + "/grpc-port");
    ASSERT_GT(plain_port_, 0);
    ASSERT_GT(grpc_port_, 0);
  }
  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
    }
  }

  HttpClient Https(const std::string& host, const std::string& ca) const {
    return HttpClient(host, port_, 20000, http::ClientTls{true, ca});
  }
  std::string InferJson() const { return InferBody(Pattern(2 * 64, 3), 2, kTinyInput).dump(); }
  std::string Url(const std::string& host = "127.0.0.1") const {
    return "https://" + host + ":" + std::to_string(port_);
  }

  TempDir dir_;
  test::TestCerts certs_;
  std::string root_, tokens_, log_;
  ModelArtifact art_;
  pid_t pid_ = -1;
  int port_ = 0, plain_port_ = 0, grpc_port_ = 0;
};

TEST_F(RegistryTls, HttpsMetadataAndInferenceWithTheCaTrusted) {
  HttpClient plain("127.0.0.1", plain_port_, 20000);
  const HttpResult want = Call(plain, "POST", "/v2/models/cnn/infer", InferJson());
  ASSERT_EQ(want.status, 200) << want.body;
  for (const char* host : {"localhost", "127.0.0.1"}) {
    SCOPED_TRACE(host);
    HttpClient c = Https(host, certs_.ca);
    HttpResult meta = Call(c, "GET", "/v2/models/cnn");
    ASSERT_EQ(meta.status, 200) << meta.body;
    EXPECT_EQ(ParseJson(meta)["name"], "cnn");
    HttpResult infer = Call(c, "POST", "/v2/models/cnn/infer", InferJson());  // same connection
    ASSERT_EQ(infer.status, 200) << infer.body;
    const std::vector<float> got = OutputData(ParseJson(infer), "probabilities");
    const std::vector<float> expected = OutputData(ParseJson(want), "probabilities");
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_FLOAT_EQ(got[i], expected[i]) << i;
  }
  // polisctl: --cacert, or POLIS_CA_FILE.
  CtlRun flag = Sh(kPolisctl + " --cacert " + certs_.ca + " models --registry " + Url("localhost") + " list --json");
  ASSERT_EQ(flag.exit_code, 0) << flag.err;
  EXPECT_EQ(Json(flag)["models"][0]["name"], "cnn");
  CtlRun env = Sh("POLIS_CA_FILE=" + certs_.ca + " " + kPolisctl + " models --registry " + Url() + " show cnn --json");
  ASSERT_EQ(env.exit_code, 0) << env.err;
}

TEST_F(RegistryTls, ClientsThatDoNotTrustTheCaFailVerification) {
  // The system's CAs (the test CA is not among them), then another CA.
  for (const std::string& ca : {std::string(), certs_.other_ca}) {
    SCOPED_TRACE(ca);
    HttpClient c = Https("localhost", ca);
    auto r = c.Request("GET", "/v2/models/cnn");
    ASSERT_FALSE(r.ok());
    const std::string m = r.status().message();
    EXPECT_NE(m.find("TLS certificate verification of localhost:" + std::to_string(port_) + " failed"),
              std::string::npos) << m;
    EXPECT_NE(m.find(ca.empty() ? "--cacert FILE or set POLIS_CA_FILE" : ca), std::string::npos) << m;
  }
  CtlRun ctl = Sh(kPolisctl + " models --registry " + Url() + " list");
  EXPECT_EQ(ctl.exit_code, 1);
  EXPECT_NE(ctl.err.find("certificate verification"), std::string::npos) << ctl.err;
  EXPECT_EQ(std::count(ctl.err.begin(), ctl.err.end(), '\n'), 1) << ctl.err;
  // A plain-HTTP request on the TLS port gets a plain 400 saying so; a TLS
  // client gets no answer from the plain port.
  HttpClient plain("127.0.0.1", port_, 20000);
  for (const char* method : {"GET", "POST"}) {
    auto r = plain.Request(method, "/v2/health/ready");
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 400);
    EXPECT_EQ(ErrorMessage(*r), "this port speaks HTTPS: use an https:// URL");
  }
  HttpClient tls_to_plain("127.0.0.1", plain_port_, 20000, http::ClientTls{true, certs_.ca});
  auto r = tls_to_plain.Request("GET", "/v2/health/ready");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("is it an https port?"), std::string::npos) << r.status().message();
}

TEST_F(RegistryTls, ThePlainPortServesReadsButRefusesWrites) {
  HttpClient plain("127.0.0.1", plain_port_, 20000);
  EXPECT_EQ(Call(plain, "GET", "/v2/health/ready").status, 200);
  EXPECT_EQ(Call(plain, "GET", "/v2/models/cnn").status, 200);
  EXPECT_EQ(Call(plain, "POST", "/v2/models/cnn/infer", InferJson()).status, 200);
  EXPECT_EQ(Call(plain, "GET", "/metrics").status, 200);
  // Promote and publish: 403 naming the TLS port, with the right token, a
  // wrong one or none -- the token is not looked at.
  const std::string promote = R"({"version": 1})";
  auto artifact = ReadFile(root_ + "/cnn/1/model.polis");
  ASSERT_TRUE(artifact.ok()) << artifact.status().ToString();
  const std::string line = "use https on the TLS port (https://127.0.0.1:" + std::to_string(port_) + ")";
  for (const std::string& token : {std::string(kAdminToken), std::string("not-a-token"), std::string()}) {
    SCOPED_TRACE(token);
    std::vector<std::pair<std::string, std::string>> auth;
    if (!token.empty()) auth.emplace_back("Authorization", "Bearer " + token);
    HttpResult p = Call(plain, "PUT", "/v2/registry/models/cnn/aliases/production", promote, auth);
    EXPECT_EQ(p.status, 403) << p.body;
    EXPECT_NE(ErrorMessage(p).find(line), std::string::npos) << p.body;
    auto upload = auth;
    upload.emplace_back("Content-Type", "application/octet-stream");
    auto u = plain.Request("POST", "/v2/registry/models/cnn/versions", *artifact, upload);
    ASSERT_TRUE(u.ok()) << u.status().ToString();
    EXPECT_EQ(u->status, 403) << u->body;
    EXPECT_NE(ErrorMessage(*u).find(line), std::string::npos) << u->body;
  }
  // Over HTTPS the same promote goes through.
  HttpClient c = Https("localhost", certs_.ca);
  HttpResult ok = Call(c, "PUT", "/v2/registry/models/cnn/aliases/production", promote,
                       {{"Authorization", std::string("Bearer ") + kAdminToken}});
  EXPECT_EQ(ok.status, 200) << ok.body;
  const std::string log = ReadOrEmpty(log_);
  EXPECT_NE(log.find("on the plain-HTTP port (writes need TLS)"), std::string::npos) << log;
  EXPECT_EQ(log.find(kAdminToken), std::string::npos) << log;
  EXPECT_EQ(log.find("not-a-token"), std::string::npos) << log;
}

TEST_F(RegistryTls, PythonUrllibInfersOverHttps) {
  const std::string body = dir_.path() + "/infer.json";
  ASSERT_TRUE(WriteFileAtomic(body, InferJson()).ok());
  const std::string script = std::string(kPython) + " " + POLIS_SOURCE_DIR + "/tests/registry/oip_https_client.py";
  CtlRun run = Sh(script + " --url " + Url("localhost") + "/v2/models/cnn/infer --body " + body + " --ca " + certs_.ca);
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const json r = Json(run);
  EXPECT_EQ(r["status"], 200) << r;
  EXPECT_EQ(r["body"]["model_name"], "cnn") << r;
  EXPECT_EQ(OutputData(r["body"], "probabilities").size(), 10u);
  CtlRun untrusted = Sh(script + " --url " + Url("localhost") + "/v2/models/cnn/infer --body " + body);
  EXPECT_EQ(untrusted.exit_code, 4) << untrusted.out << untrusted.err;
  EXPECT_NE(untrusted.out.find("CERTIFICATE_VERIFY_FAILED"), std::string::npos) << untrusted.out;
}

TEST_F(RegistryTls, GrpcOverTlsWithPythonGrpcio) {
  if (Sh(std::string(kPython) + " -c 'import grpc' && command -v protoc && command -v "
         "grpc_python_plugin").exit_code != 0)
    POLIS_MISSING_PREREQ() << "python3-grpcio, protobuf-compiler or protobuf-compiler-grpc is "
                              "not installed (launch/install-deps.sh)";
  std::vector<float> x = Pattern(2 * 64, 3);
  const std::string input = dir_.path() + "/input.f32";
  ASSERT_TRUE(WriteFileAtomic(input, std::string(reinterpret_cast<const char*>(x.data()), x.size() * 4)).ok());
  CtlRun run = Sh(std::string(kPython) + " " + POLIS_SOURCE_DIR + "/tests/registry/oip_grpc_client.py --port " +
                  std::to_string(grpc_port_) + " --proto " + POLIS_SOURCE_DIR +
                  "/registry/proto/grpc_predict_v2.proto --model cnn --input " + input +
                  " --shape 2,1,8,8 --ca " + certs_.ca + " --host localhost");
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const json g = Json(run);
  EXPECT_EQ(g["live"], true);
  EXPECT_EQ(g["model_ready"], true);
  EXPECT_EQ(g["infer_raw"]["model_name"], "cnn");
  EXPECT_EQ(g["infer_raw"]["outputs"]["probabilities"]["shape"], json::array({2, 5}));
}

// Start-up only: no server of the fixture's needed, but its certificates are.
TEST_F(RegistryTls, BadCertificateOrKeyFailsStartupNamingTheFile) {
  const std::string not_pem = dir_.path() + "/not-pem.txt";
  ASSERT_TRUE(WriteFileAtomic(not_pem, "this is no certificate\n").ok());
  const std::string missing = dir_.path() + "/missing.pem";
  struct Case {
    std::string cert, key, named;
  };
  const std::vector<Case> cases = {
      {missing, certs_.server_key, missing},
      {certs_.server_cert, missing, missing},
      {not_pem, certs_.server_key, not_pem},
      {certs_.server_cert, not_pem, not_pem},
      {certs_.server_key, certs_.server_key, certs_.server_key},  // a key where the certificate goes
      {certs_.server_cert, certs_.other_key, certs_.other_key},   // another certificate's key
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.cert + " " + c.key);
    CtlRun run = Sh(kRegistryBin + " serve --root " + root_ + " --listen 127.0.0.1:0 --tls-cert " + c.cert +
                    " --tls-key " + c.key);
    EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
    EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
    EXPECT_NE(run.err.find("'" + c.named + "'"), std::string::npos) << run.err;
  }
  CtlRun mismatch = Sh(kRegistryBin + " serve --root " + root_ + " --listen 127.0.0.1:0 --tls-cert " +
                       certs_.server_cert + " --tls-key " + certs_.other_key);
  EXPECT_NE(mismatch.err.find("does not match the certificate"), std::string::npos) << mismatch.err;
  CtlRun no_tls = Sh(kRegistryBin + " serve --root " + root_ + " --plain-listen 127.0.0.1:0");
  EXPECT_EQ(no_tls.exit_code, 2) << no_tls.err;
  EXPECT_NE(no_tls.err.find("--plain-listen needs --tls-cert"), std::string::npos) << no_tls.err;
}

}  // namespace
}  // namespace polis::registry
