// A strict reader of the Prometheus text format for the ops tests: what
// coordinator/monitor.cc and launch/tune/study_server.cc serve on /metrics.
#pragma once

#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace polis::ops_test {

// Parses the text format strictly enough to catch what Prometheus rejects:
// every sample's family has HELP and TYPE before it, families are not
// repeated, names and label sets are well formed, values parse.
struct ParsedMetrics {
  std::map<std::string, std::string> type;        // family -> type
  std::map<std::string, double> samples;          // "name{labels}" -> value
  std::vector<std::string> problems;
};

inline ParsedMetrics ParseExposition(const std::string& text) {
  ParsedMetrics p;
  std::set<std::string> help;
  std::string current;
  std::istringstream in(text);
  std::string line;
  const std::regex help_re(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*)");
  const std::regex type_re(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped))");
  const std::regex sample_re(
      R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*")*)?\})? (\S+))");
  std::smatch m;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (std::regex_match(line, m, help_re)) {
      if (!help.insert(m[1]).second) p.problems.push_back("HELP repeated: " + line);
      current = m[1];
    } else if (std::regex_match(line, m, type_re)) {
      if (m[1] != current) p.problems.push_back("TYPE without HELP before it: " + line);
      if (p.type.count(m[1])) p.problems.push_back("TYPE repeated: " + line);
      p.type[m[1]] = m[2];
    } else if (std::regex_match(line, m, sample_re)) {
      if (m[1] != current || !p.type.count(m[1]))
        p.problems.push_back("sample outside its family: " + line);
      if (p.type[m[1]] == "counter" && !std::string(m[1]).ends_with("_total"))
        p.problems.push_back("counter without _total: " + line);
      const std::string key = std::string(m[1]) + std::string(m[2]);
      if (p.samples.count(key)) p.problems.push_back("sample repeated: " + line);
      try {
        p.samples[key] = std::stod(m[5]);
      } catch (...) {
        p.problems.push_back("bad value: " + line);
      }
    } else {
      p.problems.push_back("unparsable line: " + line);
    }
  }
  return p;
}

}  // namespace polis::ops_test
