// Tests whose prerequisite (a package, a data set, a built binary) the
// project installs itself: on a developer's machine a missing one skips the
// test with the reason; under CI (CI=true) it fails it, since there the
// project's own scripts must have installed it.
//
//   if (!HaveFashionMnist()) POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed";
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace polis::test {

inline bool UnderCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) != "" && std::string(ci) != "0" && std::string(ci) != "false";
}

}  // namespace polis::test

// Like GTEST_SKIP(), but a fatal failure under CI. Streams a reason.
#define POLIS_MISSING_PREREQ()                                                                       \
  return ::testing::internal::AssertHelper(                                                          \
             ::polis::test::UnderCi() ? ::testing::TestPartResult::kFatalFailure                    \
                                      : ::testing::TestPartResult::kSkip,                           \
             __FILE__, __LINE__,                                                                     \
             ::polis::test::UnderCi() ? "missing under CI (the project installs it)" : "Skipped") = \
         ::testing::Message()
