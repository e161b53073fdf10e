// Running a study: every trial a real Polis job launched through
// launch/polis-run, in its own run directory STUDY_DIR/trials/<id>/ (its
// job file job.pbtxt there, the launcher's output in tune.log).
//
// - Local (default): up to `parallel` trials at once, each trial's ranks
//   (1 coordinator + servers + workers) counted against `slots` (nproc by
//   default). Each polis-run is a child in its own process group with
//   PR_SET_PDEATHSIG = SIGTERM, so it checkpoints and stops if polis-tune
//   dies, even by SIGKILL. SIGINT/SIGTERM to polis-tune sends SIGTERM to
//   each child by PID (polis-run then asks its coordinator to checkpoint
//   and stop), waits for them, saves the state and exits.
// - Slurm (`slurm`): each segment is submitted with `polis-run --slurm`;
//   polis-tune polls the Slurm job (scontrol) and reads the run directory
//   once it ends. Interrupting polis-tune leaves submitted jobs running;
//   --resume re-attaches to them by job id.
// - ASHA: a trial runs with --epochs set to its rung's epochs; when it is
//   promoted the same run directory is continued with `polis-run --resume
//   RUN --epochs <next rung>` from its epoch-end checkpoint. The objective
//   is read from the per-epoch rows of RUN/metrics.jsonl; a row without it
//   fails the trial with a line naming the metric and the keys it has.
// - After every change STUDY_DIR/study.json is rewritten crash-safely;
//   study.csv, curves.png and params.png follow each finished segment. When
//   the study ends the best trial's model is published to the study's
//   registry root and aliased (default `best`), with the study, the trial
//   and its settings in its lineage.
//
// - While it runs, the study is served over HTTP (StudyServer: the study
//   page, /api/study, /metrics) at the address printed at start and kept in
//   STUDY_DIR/tune.json; every save publishes the new state there.
//
// Runs on the calling thread (the HTTP server has one thread of its own);
// installs SIGINT/SIGTERM handlers.
#pragma once

#include <string>

namespace polis::tune {

struct TuneOptions {
  std::string study_file;   // a new study (or "" with resume)
  std::string study_dir;    // where it lives (default studies/<name>)
  bool resume = false;      // continue study_dir
  bool check_only = false;  // validate the study and exit
  int parallel = 1;         // trials at once
  int slots = 0;            // ranks this machine may run (0: nproc)
  int threads = 0;          // oneDNN threads per worker (0: nproc / (parallel * workers), >= 1)
  bool slurm = false;
  std::string slurm_opts;   // passed to polis-run --slurm
  std::string polis_run;    // launch/polis-run
  std::string build_dir;    // POLIS_BUILD_DIR for polis-run
  // Where the study page and /api/study are served (study_server.h):
  // HOST:PORT (port 0: ephemeral), or "off".
  std::string monitor = "127.0.0.1:0";
};

// Exit code: 0 the study finished (or was stopped on request, resumable),
// 1 it failed (no trial reported the objective, or publishing failed),
// 2 bad arguments or a bad study (one line on stderr naming the field).
int RunStudy(const TuneOptions& options);

}  // namespace polis::tune
