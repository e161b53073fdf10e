// Headless Chromium (Debian's `chromium`) for the ops tests that render a
// page: the command line that loads a URL, a substring counter and an
// element cutter for the DOM it dumps, and a checked screenshot.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "tests/ops/ops_test_util.h"

namespace polis::ops_test {

inline int Count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The part of a dumped DOM from the element with `id` to the next `end`.
inline std::string Element(const std::string& html, const std::string& id, const std::string& end) {
  const size_t at = html.find("id=\"" + id + "\"");
  if (at == std::string::npos) return "";
  return html.substr(at, html.find(end, at) - at);
}

// Chromium as root in a container: no sandbox, no GPU, no background
// traffic, a throw-away profile; virtual time lets the page's fetch and
// timers run before the DOM is dumped.
inline std::string Chromium(const std::string& profile, const std::string& args, const std::string& url) {
  return "timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking "
         "--disable-component-update --disable-default-apps --disable-sync --no-first-run "
         "--disable-dev-shm-usage --user-data-dir=" + profile + " --virtual-time-budget=5000 " + args +
         " " + url;
}

// A screenshot of `url` in a window of `size` ("1280,1100"), kept in the
// file named by the environment variable `keep_env` when set, else written
// to `fallback`: it must be a PNG big enough to show a page.
inline void CheckScreenshot(const std::string& profile, const std::string& url, const std::string& size,
                            const char* keep_env, const std::string& fallback) {
  const char* keep = std::getenv(keep_env);
  const std::string png = keep && *keep ? std::string(keep) : fallback;
  auto shot = Shell(Chromium(profile, "--hide-scrollbars --window-size=" + size + " --screenshot=" + png, url));
  ASSERT_EQ(shot.exit_code, 0) << shot.errors;
  const std::string bytes = ReadOrEmpty(png);
  ASSERT_GT(bytes.size(), 20000u) << "screenshot " << png << " is too small to show the page";
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
}

}  // namespace polis::ops_test
