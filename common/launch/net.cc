#include "common/launch/net.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstdint>

#include "common/echo.h"

namespace polis::launch {
namespace {

// An IPv4 address in host byte order, or false.
bool ParseIpv4(const std::string& text, uint32_t* out) {
  in_addr a{};
  if (inet_pton(AF_INET, text.c_str(), &a) != 1) return false;
  *out = ntohl(a.s_addr);
  return true;
}

struct Cidr {
  uint32_t base = 0;
  uint32_t mask = 0;
};

StatusOr<Cidr> ParseCidr(const std::string& net) {
  const size_t slash = net.find('/');
  const std::string bits = net.substr(slash + 1);
  uint32_t base = 0;
  if (!ParseIpv4(net.substr(0, slash), &base) || bits.empty() || bits.size() > 2 ||
      bits.find_first_not_of("0123456789") != std::string::npos || std::stoi(bits) > 32)
    return InvalidArgument("--net: '{}' is not an IPv4 network (A.B.C.D/BITS) or an interface name",
                           EchoValue(net));
  const int n = std::stoi(bits);
  const uint32_t mask = n == 0 ? 0 : ~uint32_t{0} << (32 - n);
  return Cidr{base & mask, mask};
}

std::string Known(const std::vector<NetInterface>& interfaces) {
  std::string out;
  for (const auto& i : interfaces) out += (out.empty() ? "" : ", ") + i.name + " " + i.ipv4;
  return out.empty() ? "none" : out;
}

}  // namespace

StatusOr<std::vector<NetInterface>> LocalInterfaces() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return ErrnoStatus("getifaddrs", "", errno);
  std::vector<NetInterface> out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN] = "";
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof(text));
    out.push_back({i->ifa_name, text});
  }
  freeifaddrs(list);
  return out;
}

StatusOr<std::string> SelectAddress(const std::string& net, const std::vector<NetInterface>& interfaces) {
  if (net.find('/') == std::string::npos) {
    for (const auto& i : interfaces)
      if (i.name == net) return i.ipv4;
    return NotFound("--net {}: no interface of that name with an IPv4 address here (interfaces: {})",
                    EchoValue(net), Known(interfaces));
  }
  POLIS_ASSIGN_OR_RETURN(Cidr cidr, ParseCidr(net));
  for (const auto& i : interfaces) {
    uint32_t a = 0;
    if (ParseIpv4(i.ipv4, &a) && (a & cidr.mask) == cidr.base) return i.ipv4;
  }
  return NotFound("--net {}: no interface here has an address in it (interfaces: {})", EchoValue(net),
                  Known(interfaces));
}

Status ResolveHost(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (found != nullptr) freeaddrinfo(found);
  if (rc != 0) return NotFound("unknown host '{}': {}", EchoValue(host), gai_strerror(rc));
  return Status::Ok();
}

}  // namespace polis::launch
