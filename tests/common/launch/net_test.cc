#include "common/launch/net.h"

#include <gtest/gtest.h>

namespace polis::launch {
namespace {

const std::vector<NetInterface> kHere = {{"lo", "127.0.0.1"}, {"eth0", "192.168.5.7"}, {"br9", "10.77.3.1"}};

TEST(SelectAddress, ByCidr) {
  auto a = SelectAddress("10.77.3.0/24", kHere);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(*a, "10.77.3.1");
  EXPECT_EQ(*SelectAddress("192.168.0.0/16", kHere), "192.168.5.7");
  EXPECT_EQ(*SelectAddress("10.77.3.1/32", kHere), "10.77.3.1");
}

TEST(SelectAddress, ByInterfaceName) {
  EXPECT_EQ(*SelectAddress("eth0", kHere), "192.168.5.7");
  EXPECT_EQ(*SelectAddress("lo", kHere), "127.0.0.1");
}

TEST(SelectAddress, NoMatchNamesTheNetAndTheInterfaces) {
  for (const char* net : {"10.78.0.0/16", "eth1"}) {
    auto a = SelectAddress(net, kHere);
    ASSERT_FALSE(a.ok()) << net;
    EXPECT_EQ(a.status().code(), Code::kNotFound);
    EXPECT_NE(a.status().message().find(net), std::string::npos) << a.status().message();
    EXPECT_NE(a.status().message().find("br9 10.77.3.1"), std::string::npos) << a.status().message();
  }
}

TEST(SelectAddress, MalformedCidrIsInvalid) {
  for (const char* net : {"10.0.0/24", "10.0.0.0/33", "10.0.0.0/", "x/8"})
    EXPECT_EQ(SelectAddress(net, kHere).status().code(), Code::kInvalidArgument) << net;
}

TEST(LocalInterfaces, IncludesLoopback) {
  auto here = LocalInterfaces();
  ASSERT_TRUE(here.ok()) << here.status().ToString();
  EXPECT_TRUE(SelectAddress("127.0.0.0/8", *here).ok());
}

// Only names /etc/hosts answers: a name that fails would ask the DNS
// server. The unknown-host case runs inside an emulated host, which has no
// route to one (tests/integration/multihost_integration_test.cc).
TEST(ResolveHost, AddressesAndLocalhostResolve) {
  EXPECT_TRUE(ResolveHost("127.0.0.1").ok());
  EXPECT_TRUE(ResolveHost("10.1.2.3").ok());
  EXPECT_TRUE(ResolveHost("localhost").ok());
}

}  // namespace
}  // namespace polis::launch
