// Every environment variable Polis reads, in one place (docs/env.md lists
// them for users). Each is read once; a value that is set is logged at INFO.
#pragma once

#include <string>

namespace polis::env {

// POLIS_DEBUG: WARN (default), INFO, TRACE.
std::string DebugLevel();
// POLIS_DEBUG_SUBSYS: comma-separated subsystems, default all.
std::string DebugSubsys();
// POLIS_IDLE_MAX_US: longest sleep, in microseconds, of a role waiting for
// a message (back-off instead of busy-polling). Default 200.
int IdleMaxMicros();
// POLIS_TIMEOUT_S: deadline for any blocking wait on a peer. Default 300.
int TimeoutSeconds();
// POLIS_FASHION_MNIST_DIR: where jobs that say "fashion-mnist" find the files.
// Default /usr/share/datasets/fashion-mnist.
std::string FashionMnistDir();

}  // namespace polis::env
