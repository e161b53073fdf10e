// The host figures every rank reports (common/host_stats.h): /proc parsing
// against fixture text, rates over two samples from fixture files, and the
// coordinator's per-host table and its Prometheus series
// (coordinator/host_table.h, coordinator/host_metrics.h).
#include <gtest/gtest.h>

#include <thread>

#include "common/fs.h"
#include "common/host_stats.h"
#include "coordinator/host_metrics.h"
#include "coordinator/host_table.h"
#include "tests/ops/ops_test_util.h"

namespace polis {
namespace {

constexpr char kStat[] =
    "cpu  100 20 30 800 50 0 10 0 7 0\n"
    "cpu0 50 10 15 400 25 0 5 0 0 0\n"
    "cpu1 50 10 15 400 25 0 5 0 0 0\n"
    "intr 12345 0 0\n"
    "ctxt 999\n";
constexpr char kMeminfo[] =
    "MemTotal:       24576000 kB\n"
    "MemFree:         1000000 kB\n"
    "MemAvailable:   20000000 kB\n"
    "Buffers:          100000 kB\n";
constexpr char kNetDev[] =
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n"
    "    lo: 5000 50 0 0 0 0 0 0 5000 50 0 0 0 0 0 0\n"
    "  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n"
    "veth-h1: 300 3 0 0 0 0 0 0 400 4 0 0 0 0 0 0\n";

TEST(HostStats, ParsesProcStat) {
  auto cpu = ParseProcStat(kStat);
  ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
  EXPECT_EQ(cpu->busy, 100u + 20 + 30 + 0 + 10 + 0);  // guest is inside user
  EXPECT_EQ(cpu->total, cpu->busy + 800 + 50);
  EXPECT_EQ(cpu->cpus, 2);
  // The old four-number form still parses.
  EXPECT_TRUE(ParseProcStat("cpu 1 2 3 4\n").ok());
}

TEST(HostStats, RefusesAMalformedProcStatWithTheField) {
  auto none = ParseProcStat("intr 1 2\n");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no 'cpu ' line"), std::string::npos);
  auto bad = ParseProcStat("cpu  100 x 30 800\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("field 2 of the 'cpu' line is 'x'"), std::string::npos)
      << bad.status().message();
}

TEST(HostStats, ParsesMeminfo) {
  auto m = ParseMeminfo(kMeminfo);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->total_bytes, 24576000LL * 1024);
  EXPECT_EQ(m->available_bytes, 20000000LL * 1024);
  auto missing = ParseMeminfo("MemTotal: 100 kB\n");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("lacks MemAvailable"), std::string::npos);
  EXPECT_FALSE(ParseMeminfo("MemTotal: lots kB\nMemAvailable: 1 kB\n").ok());
}

TEST(HostStats, NetDevSumsEveryLinkButLo) {
  auto n = ParseNetDev(kNetDev);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(n->rx_bytes, 1300);
  EXPECT_EQ(n->tx_bytes, 2400);
  EXPECT_EQ(n->interfaces, "eth0,veth-h1");
}

TEST(HostStats, NetDevCountsLoWhenItIsTheOnlyLink) {
  const std::string only_lo = std::string(kNetDev).substr(0, std::string(kNetDev).find("  eth0"));
  auto n = ParseNetDev(only_lo);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(n->rx_bytes, 5000);
  EXPECT_EQ(n->interfaces, "lo");
  auto bad = ParseNetDev(only_lo + "eth1 1 2 3\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("line 4"), std::string::npos) << bad.status().message();
}

// Two samples of fixture files: the CPU share and the byte rates cover
// what changed between them.
TEST(HostStats, SamplerGivesRatesBetweenSamples) {
  ops_test::TempDir dir;
  ASSERT_TRUE(MakeDirectories(dir.path() + "/net").ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/stat", kStat).ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/meminfo", kMeminfo).ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/net/dev", kNetDev).ok());
  HostSampler sampler(dir.path(), std::chrono::milliseconds(50));
  EXPECT_FALSE(sampler.Sample().has_value()) << "not due yet";
  // 300 more jiffies, 150 of them busy; 10000 more bytes in on eth0.
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/stat", "cpu  250 20 30 950 50 0 10 0 7 0\ncpu0 1\ncpu1 1\n").ok());
  std::string net = kNetDev;
  net.replace(net.find("  eth0: 1000"), 12, "  eth0: 11000");
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/net/dev", net).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  auto h = sampler.Sample();
  ASSERT_TRUE(h.has_value());
  EXPECT_DOUBLE_EQ(h->cpu_percent(), 50.0);
  EXPECT_EQ(h->cpus(), 2);
  EXPECT_EQ(h->memory_total_bytes(), 24576000LL * 1024);
  EXPECT_EQ(h->net_rx_bytes(), 11300);
  EXPECT_EQ(h->net_interfaces(), "eth0,veth-h1");
  EXPECT_GT(h->interval_seconds(), 0.05);
  EXPECT_NEAR(h->net_rx_bytes_per_second() * h->interval_seconds(), 10000, 1e-6);
  EXPECT_DOUBLE_EQ(h->net_tx_bytes_per_second(), 0);
  EXPECT_EQ(h->gpus_size(), 0) << "a CPU build reports no GPU";
}

// The real /proc of this machine gives plausible figures.
TEST(HostStats, SamplesThisHost) {
  HostSampler sampler("/proc", std::chrono::milliseconds(100));
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  auto h = sampler.Sample();
  ASSERT_TRUE(h.has_value());
  ASSERT_TRUE(h->has_cpu_percent());
  EXPECT_GE(h->cpu_percent(), 0);
  EXPECT_LE(h->cpu_percent(), 100);
  EXPECT_GE(h->cpus(), 1);
  EXPECT_GT(h->memory_total_bytes(), 0);
  EXPECT_LE(h->memory_available_bytes(), h->memory_total_bytes());
  EXPECT_FALSE(h->net_interfaces().empty());
  EXPECT_GE(h->net_rx_bytes_per_second(), 0);
}

TEST(HostTable, OneEntryPerHostWithItsRanksAndCheckedFigures) {
  coordinator::HostTable table;
  const auto now = std::chrono::steady_clock::now();
  proto::HostStats a;
  a.set_cpu_percent(42.5);
  a.set_cpus(8);
  a.set_memory_total_bytes(1000);
  a.set_memory_available_bytes(400);
  a.set_net_rx_bytes_per_second(1.5e6);
  a.set_net_tx_bytes_per_second(std::nan(""));  // not finite: left out
  auto* g = a.add_gpus();
  g->set_index(0);
  g->set_utilization_percent(77);
  g->set_memory_used_bytes(5);
  g->set_memory_total_bytes(10);
  table.Update("node1", 2, a, now);
  proto::HostStats b;
  b.set_cpu_percent(250);  // out of range
  table.Update("node2", 3, b, now);
  const auto j = table.Json({{0, "coordinator", "node1"}, {1, "server", "node2"}, {2, "worker", "node1"},
                             {3, "worker", "node2"}, {4, "worker", "node3"}},
                            now + std::chrono::seconds(2));
  ASSERT_EQ(j.size(), 3u) << j.dump(2);
  EXPECT_EQ(j[0]["host"], "node1");
  EXPECT_EQ(j[0]["ranks"].size(), 2u);
  EXPECT_EQ(j[0]["ranks"][1]["role"], "worker");
  EXPECT_EQ(j[0]["cpu_percent"], 42.5);
  EXPECT_EQ(j[0]["memory_used_bytes"], 600);
  EXPECT_TRUE(j[0]["net_tx_bytes_per_second"].is_null());
  EXPECT_EQ(j[0]["gpus"][0]["utilization_percent"], 77.0);
  EXPECT_EQ(j[0]["sampled_by_rank"], 2);
  EXPECT_NEAR(j[0]["sample_age_seconds"].get<double>(), 2.0, 1e-6);
  EXPECT_TRUE(j[1]["cpu_percent"].is_null()) << "250 % is refused";
  EXPECT_TRUE(j[2]["cpu_percent"].is_null()) << "no report from node3 yet";
  EXPECT_EQ(j[2]["ranks"][0]["rank"], 4);

  std::string text;
  coordinator::AppendHostMetrics(j, &text);
  EXPECT_NE(text.find("polis_host_cpu_percent{host=\"node1\"} 42.5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("polis_host_memory_used_bytes{host=\"node1\"} 600\n"), std::string::npos) << text;
  EXPECT_NE(text.find("polis_host_ranks{host=\"node3\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("polis_host_gpu_utilization_percent{host=\"node1\",gpu=\"0\"} 77\n"), std::string::npos)
      << text;
  EXPECT_EQ(text.find("polis_host_cpu_percent{host=\"node2\"}"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE polis_host_cpu_percent gauge"), std::string::npos) << text;
}

}  // namespace
}  // namespace polis
