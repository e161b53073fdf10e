// polis-tune: hyperparameter studies over Polis jobs (docs/tuning.md).
//
//   polis-tune [--parallel K] [--slots N] [--study-dir DIR] [--slurm [OPTS]] [--monitor HOST:PORT|off] STUDY.pbtxt
//   polis-tune --resume STUDY_DIR [--parallel K] ...
//   polis-tune --check STUDY.pbtxt
//
// Exit codes: 0 done (or stopped on request; --resume continues it), 1 the
// study failed, 2 bad arguments or a bad study (one line naming the field).
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "launch/tune/runner.h"

namespace {

// The build directory this binary runs from (BUILD/launch/polis-tune).
std::string BuildDirOfSelf() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  std::string p(buf, static_cast<size_t>(n));
  for (int i = 0; i < 2; ++i) p = p.substr(0, p.rfind('/'));
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);  // progress lines reach a log file as they happen
  polis::tune::TuneOptions o;
  std::string resume;
  CLI::App app{"polis-tune: run a hyperparameter study (docs/tuning.md): every trial a Polis job through\n"
               "launch/polis-run, ASHA early stopping, crash-safe study state, the best model published.\n"
               "Exit codes: 0 done or stopped on request, 1 failed, 2 bad arguments or study."};
  app.add_option("study", o.study_file, "study file (protobuf text, common/proto/study.proto)");
  app.add_option("--resume", resume, "continue the study in STUDY_DIR after a crash or a stop");
  app.add_option("--study-dir", o.study_dir, "where the study lives (default studies/<name>)");
  app.add_option("--parallel", o.parallel, "trials at once (default 1)");
  app.add_option("--slots", o.slots, "ranks this machine may run at once (default: nproc)");
  app.add_option("--threads", o.threads, "oneDNN threads per worker (default: nproc / (parallel * workers))");
  auto* slurm = app.add_option("--slurm", o.slurm_opts,
                               "submit each trial to Slurm (polis-run --slurm); OPTS go to sbatch")
                    ->expected(0, 1);
  app.add_option("--monitor", o.monitor,
                 "serve the study page, /api/study and /metrics on HOST:PORT (default 127.0.0.1:0, an "
                 "ephemeral port; 'off': none)");
  app.add_flag("--check", o.check_only, "check the study and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  o.slurm = slurm->count() > 0;
  // `--slurm STUDY.pbtxt`: the word after --slurm is the study, not sbatch options.
  if (o.slurm && !o.slurm_opts.empty() && o.slurm_opts[0] != '-' && o.study_file.empty()) {
    o.study_file = o.slurm_opts;
    o.slurm_opts.clear();
  }
  if (!resume.empty()) {
    if (!o.study_file.empty() || !o.study_dir.empty()) {
      std::fprintf(stderr, "polis-tune: --resume STUDY_DIR takes no study file or --study-dir\n");
      return 2;
    }
    o.resume = true;
    o.study_dir = resume;
  } else if (o.study_file.empty()) {
    std::fprintf(stderr, "polis-tune: give a study file, or --resume STUDY_DIR (see --help)\n");
    return 2;
  }
  const char* root = std::getenv("POLIS_ROOT");
  o.polis_run = std::string(root != nullptr && *root ? root : POLIS_SOURCE_DIR) + "/launch/polis-run";
  const char* build = std::getenv("POLIS_BUILD_DIR");
  o.build_dir = build != nullptr && *build ? build : BuildDirOfSelf();
  return polis::tune::RunStudy(o);
}
