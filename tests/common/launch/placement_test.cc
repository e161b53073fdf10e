#include "common/launch/placement.h"

#include <gtest/gtest.h>

#include <map>

namespace polis::launch {
namespace {

std::vector<HostSlots> Hosts(const std::string& list) {
  auto h = ParseHostList(list);
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  return h.ok() ? *h : std::vector<HostSlots>{};
}

TEST(ParseHostList, ReadsHostsAndSlots) {
  auto h = Hosts("h1:2,10.0.0.3:4,h3");
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[0].host, "h1");
  EXPECT_EQ(h[0].slots, 2);
  EXPECT_EQ(h[1].host, "10.0.0.3");
  EXPECT_EQ(h[1].slots, 4);
  EXPECT_EQ(h[2].slots, 1);
  EXPECT_EQ(HostListString(h), "h1:2,10.0.0.3:4,h3:1");
}

TEST(ParseHostList, RefusesMalformedLists) {
  for (const char* bad : {"", "h1:", "h1:0", "h1:x", "h1:2,", ",h1:2", "h 1:2", "h1:2:3", "h1:99999", "h1,h1"}) {
    auto h = ParseHostList(bad);
    ASSERT_FALSE(h.ok()) << bad;
    EXPECT_NE(h.status().message().find("--hosts"), std::string::npos) << h.status().ToString();
  }
}

TEST(ParseHostfile, SkipsCommentsAndBlankLines) {
  auto h = ParseHostfile("# the cluster\n\nnode1 slots=2\n  node2   slots=3  # big one\nnode3\n", "hf");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(HostListString(*h), "node1:2,node2:3,node3:1");
}

TEST(ParseHostfile, NamesFileAndLineOfAMalformedLine) {
  const std::map<std::string, std::string> cases = {
      {"a slots=2\nb slot=2\n", "hf:2:"},      {"a slots=2\n\nb slots=0\n", "hf:3:"},
      {"a slots=two\n", "hf:1:"},              {"a slots=2 max_slots=4\n", "hf:1:"},
      {"a/b slots=1\n", "hf:1:"}};
  for (const auto& [text, where] : cases) {
    auto h = ParseHostfile(text, "hf");
    ASSERT_FALSE(h.ok()) << text;
    EXPECT_EQ(h.status().message().rfind(where, 0), 0u) << h.status().message();
    EXPECT_NE(h.status().message().find("HOST slots=N"), std::string::npos) << h.status().message();
  }
  EXPECT_FALSE(ParseHostfile("# nothing\n", "hf").ok());
  EXPECT_FALSE(ParseHostfile("a slots=1\na slots=2\n", "hf").ok());
}

std::string Roles(const std::vector<PlacedRank>& p) {
  std::string out;
  for (const auto& r : p) out += r.role.substr(0, 1) + "@" + r.host + "." + std::to_string(r.local_rank) + " ";
  return out;
}

TEST(Place, CoordinatorFirstServersSpreadWorkersFill) {
  auto p = Place(Hosts("a:2,b:2,c:2"), 2, 2);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(Roles(*p), "c@a.0 s@b.0 s@c.0 w@a.1 w@b.1 ");
  for (size_t i = 0; i < p->size(); ++i) EXPECT_EQ((*p)[i].rank, static_cast<int>(i));
}

TEST(Place, NeverTwoServersOnAHostWhileAnotherHasNone) {
  // Every host count and slot shape up to 4 hosts: a host holds a second
  // server only when every host with a free slot left holds one.
  for (int hosts = 1; hosts <= 4; ++hosts)
    for (int slots = 1; slots <= 3; ++slots)
      for (int servers = 0; servers <= hosts * slots - 2; ++servers) {
        std::vector<HostSlots> h;
        for (int k = 0; k < hosts; ++k) h.push_back({"h" + std::to_string(k), k == 0 ? slots + 1 : slots});
        const int workers = hosts * slots + 1 - 1 - servers;
        auto p = Place(h, servers, workers);
        ASSERT_TRUE(p.ok()) << p.status().ToString();
        std::map<std::string, int> per_host;
        for (const auto& r : *p)
          if (r.role == "server") per_host[r.host]++;
        int most = 0, least = 1 << 30;
        for (const auto& x : h) {
          most = std::max(most, per_host[x.host]);
          least = std::min(least, per_host[x.host]);
        }
        EXPECT_LE(most - least, 1) << Roles(*p);
      }
}

TEST(Place, UsesEverySlotExactlyOnce) {
  auto p = Place(Hosts("a:1,b:3"), 1, 2);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(Roles(*p), "c@a.0 s@b.0 w@b.1 w@b.2 ");
}

TEST(Place, OneHostHoldsEverything) {
  auto p = Place(Hosts("only:4"), 1, 2);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(Roles(*p), "c@only.0 s@only.1 w@only.2 w@only.3 ");
}

TEST(Place, TooFewSlotsNamesNeededAndGiven) {
  auto p = Place(Hosts("a:2,b:2"), 2, 3);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("need 6"), std::string::npos) << p.status().message();
  EXPECT_NE(p.status().message().find("give 4"), std::string::npos) << p.status().message();
}

TEST(PlacementTable, OneLinePerRankUnderAHeader) {
  auto p = Place(Hosts("10.9.0.2:1,10.9.0.3:1"), 0, 1);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(PlacementTable(*p),
            " rank  role         host      local_rank\n"
            "    0  coordinator  10.9.0.2  0\n"
            "    1  worker       10.9.0.3  0\n");
}

}  // namespace
}  // namespace polis::launch
