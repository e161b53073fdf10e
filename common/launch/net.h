// The network a multi-host job uses (polis-run --net CIDR|IFACE): which of
// this host's interfaces it selects, and whether a host name resolves.
// MPI's btl and out-of-band traffic and the coordinator's monitoring API all
// use the address --net selects (docs/design/multi-host.md).
//
// SelectAddress is pure; LocalInterfaces and ResolveHost ask the operating
// system (getifaddrs, getaddrinfo). Thread-safe.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace polis::launch {

struct NetInterface {
  std::string name;  // "eth0"
  std::string ipv4;  // "10.0.0.2"
};

// This network namespace's interfaces with an IPv4 address, in the
// system's order.
StatusOr<std::vector<NetInterface>> LocalInterfaces();

// The first IPv4 address `net` selects among `interfaces`: with a CIDR
// ("10.0.0.0/24") one inside it, else the address of the interface of that
// name. NotFound names `net` and the interfaces there are; a malformed CIDR
// is InvalidArgument.
StatusOr<std::string> SelectAddress(const std::string& net, const std::vector<NetInterface>& interfaces);

// Ok when `host` is an IPv4 address or a name the resolver knows;
// NotFound otherwise.
Status ResolveHost(const std::string& host);

}  // namespace polis::launch
