// Helpers for integration tests that start real processes.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "tests/prereq.h"

namespace polis::it {

inline const std::string kSrc = POLIS_SOURCE_DIR;
inline const std::string kBin = POLIS_BINARY_DIR;

struct ShellRun {
  int exit_code = -1;
  std::string output;
};

// Runs a shell command, capturing stdout and stderr together.
inline ShellRun Shell(const std::string& cmd) {
  ShellRun r;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) r.output.append(buf.data(), n);
  int st = pclose(p);
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

inline bool HaveFashionMnist() {
  return PathExists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
}

// polis-run with the test's build directory.
inline std::string PolisRun(const std::string& args) {
  return "POLIS_BUILD_DIR=" + kBin + " " + kSrc + "/launch/polis-run " + args;
}

inline nlohmann::json ReadJson(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return nlohmann::json();
  return nlohmann::json::parse(*text, nullptr, false);
}

// The seed job with some lines replaced, written to dir/name.
inline std::string JobVariant(const std::string& dir, const std::string& name,
                              const std::vector<std::pair<std::string, std::string>>& edits,
                              const std::string& base = "fashion_cnn.pbtxt") {
  std::string text = *ReadFile(kSrc + "/jobs/" + base);
  for (const auto& [from, to] : edits) {
    size_t at = text.find(from);
    if (at == std::string::npos) std::abort();
    text.replace(at, from.size(), to);
  }
  std::string path = dir + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// PIDs of the MPI ranks of a job running with --run-dir `run_dir`, by rank.
inline std::vector<int> RankPids(const std::string& run_dir, int ranks) {
  std::vector<int> pids(ranks, -1);
  ShellRun r = Shell("pgrep -f 'polis-train .*--run-dir " + run_dir + "'");
  size_t at = 0;
  while (at < r.output.size()) {
    size_t nl = r.output.find('\n', at);
    int pid = std::atoi(r.output.substr(at, nl - at).c_str());
    at = nl == std::string::npos ? r.output.size() : nl + 1;
    if (pid <= 0) continue;
    std::ifstream env("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
    std::string e((std::istreambuf_iterator<char>(env)), {});
    size_t k = e.find("OMPI_COMM_WORLD_RANK=");
    if (k == std::string::npos) continue;
    int rank = std::atoi(e.c_str() + k + 21);
    if (rank >= 0 && rank < ranks) pids[rank] = pid;
  }
  return pids;
}

// A test that runs real jobs on Fashion-MNIST, in a fresh temporary
// directory `dir_` removed afterwards.
class FashionJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveFashionMnist())
      POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)";
    char tmpl[] = "/tmp/polis-it-XXXXXX";
    dir_ = mkdtemp(tmpl);
  }
  void TearDown() override {
    if (!dir_.empty()) std::system(("rm -rf " + dir_).c_str());
  }
  std::string dir_;
};

}  // namespace polis::it
