// An emulated cluster (launch/cluster/emucluster: one network namespace per
// host, real TCP over a bridge, links capped at 1 Gbit/s) for the lifetime
// of the object: `up` in the constructor, `down` (by the names it recorded)
// in the destructor, also when the test fails. Used by the multi-host tests.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/integration/shell.h"
#include "tests/prereq.h"

namespace polis::it {

inline const std::string kEmucluster = kSrc + "/launch/cluster/emucluster";

class EmulatedCluster {
 public:
  // `up_options`: more for `emucluster up` (e.g. --private, --slurm).
  EmulatedCluster(const std::string& dir, int hosts, const std::string& up_options = "") : dir_(dir) {
    up_ = Shell(kEmucluster + " up --dir " + dir_ + " --hosts " + std::to_string(hosts) + " --rate 1gbit " + up_options);
    if (up_.exit_code != 0) return;
    auto hosts_json = ReadJson(dir_ + "/hosts.json");
    for (const auto& h : hosts_json) addresses_.push_back(h["address"]);
    const std::string a = addresses_.empty() ? "" : addresses_[0];
    subnet_ = a.substr(0, a.rfind('.')) + ".0/24";
  }
  ~EmulatedCluster() {
    if (up_.exit_code != 3) Shell(kEmucluster + " down --dir " + dir_);
  }
  EmulatedCluster(const EmulatedCluster&) = delete;
  EmulatedCluster& operator=(const EmulatedCluster&) = delete;

  const ShellRun& up() const { return up_; }
  // polis-run's options for running on this cluster.
  std::string Options(const std::string& hosts_option) const {
    return hosts_option + " --net " + subnet_ + " --rsh-agent " + dir_ + "/rsh";
  }
  std::string hostfile() const { return dir_ + "/hostfile"; }
  const std::string& subnet() const { return subnet_; }
  const std::vector<std::string>& addresses() const { return addresses_; }
  std::string Exec(const std::string& host, const std::string& cmd) const {
    return kEmucluster + " exec --dir " + dir_ + " " + host + " " + cmd;
  }
  // With --slurm: a command prefix that points Slurm's clients at this
  // cluster, and the tail of its daemons' logs.
  std::string slurm_env() const { return "SLURM_CONF=" + dir_ + "/slurm/etc/slurm.conf "; }
  std::string slurm_logs() const { return Shell("tail -n 15 " + dir_ + "/slurm/log/*.log").output; }

 private:
  std::string dir_;
  ShellRun up_;
  std::vector<std::string> addresses_;
  std::string subnet_;
};

}  // namespace polis::it

// In a fixture's SetUp, after making `cluster` (an EmulatedCluster*): a tool
// the project installs missing fails under CI (POLIS_MISSING_PREREQ), a
// machine that cannot make namespaces (not root, no CAP_NET_ADMIN) skips with
// emucluster's reason, any other failure to come up fails.
#define POLIS_REQUIRE_CLUSTER_UP(cluster)                                                       \
  do {                                                                                          \
    const ::polis::it::ShellRun& polis_up_ = (cluster)->up();                                   \
    if (polis_up_.exit_code == 3 && polis_up_.output.find("not found") != std::string::npos)   \
      POLIS_MISSING_PREREQ() << polis_up_.output;                                               \
    if (polis_up_.exit_code == 3) GTEST_SKIP() << polis_up_.output;                             \
    ASSERT_EQ(polis_up_.exit_code, 0) << polis_up_.output;                                      \
  } while (0)
