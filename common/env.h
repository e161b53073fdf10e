// Every environment variable Polis reads, in one place (docs/env.md lists
// them for users). Each is read once; a value that is set is logged at INFO.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

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
// POLIS_HEARTBEAT_TIMEOUT_S (default 60): the coordinator names a rank and
// stops the job when the rank has been silent this long while the job waits
// on it (a server; a worker whose push a server waits for; every worker of
// an all-reduce job at once). Workers report at least once a second while
// they train, servers every 2 s.
int HeartbeatTimeoutSeconds();
// POLIS_STALL_WARN_S (default 60; 0 = off): while no worker completes a step
// for this long, the coordinator logs a warning every this many seconds
// naming the ranks the job waits on and what each last reported.
int StallWarnSeconds();
// POLIS_FASHION_MNIST_DIR: where jobs that say "fashion-mnist" find the files.
// Default /usr/share/datasets/fashion-mnist.
std::string FashionMnistDir();

// ---- Collectives (common/comm/communicator.h, docs/design/allreduce.md) ----
// These are read when a communicator is built (not cached), so tests can
// vary them.
// POLIS_ALLREDUCE_ALGO: auto (default), mpi, ring, rd, rabenseifner, direct, hier;
// forces what kAuto picks. Empty means auto.
std::string AllreduceAlgo();
// POLIS_ALLREDUCE_RD_MAX_KB: largest message (wire KiB) for which kAuto picks
// recursive doubling; -1 (default) means the measured per-size table.
int AllreduceRdMaxKiB();
// POLIS_ALLREDUCE_HIER_MIN_KB: smallest message (wire KiB) for which kAuto
// picks the hierarchical algorithm on a multi-host topology; -1 (default)
// means the measured threshold.
int AllreduceHierMinKiB();
// POLIS_ALLREDUCE_PIECES: how many pieces the hierarchical all-reduce cuts
// a call into to overlap the host phases with the cross-host ring (1: no
// pipelining). Default -1: by size (allreduce_hierarchical.cc).
int AllreducePieces();
// POLIS_ALLREDUCE_SEGMENT_KB: ring pipeline segment, in wire KiB (1..65536).
// Default 128.
int AllreduceSegmentKiB();
// POLIS_COMM_SPIN_US: how long a collective's wait polls before it starts
// sleeping with back-off (POLIS_IDLE_MAX_US caps the sleeps). Default 50.
int CommSpinMicros();

// POLIS_MONITOR_TOKEN: bearer token for the monitoring API's POSTs ("" =
// the coordinator makes a random one).
std::string MonitorToken();
// POLIS_REGISTRY_TOKEN: bearer token for a polis-registry server (publishing
// from a job with registry.url and no registry.token_file; polisctl models
// without --token-file). "" = none.
std::string RegistryToken();
// POLIS_RESTART_COUNT and POLIS_RESTART_CAUSE: set by polis-run
// --max-restarts on an automatic restart (how many so far, and one line on
// why the previous attempt failed); shown in /api/status, /metrics and
// result.json. 0 and "" on a first attempt.
int RestartCount();
std::string RestartCause();
// POLIS_JOBS_DIR: where launch/polis-run records each run and `polisctl
// cluster` finds them. "" = the default, $HOME/.polis/jobs.
std::string JobsDir();

// Test hooks (documented in docs/env.md; never needed in production):
// POLIS_TEST_SLOW_WORKER="W:MS" makes worker index W sleep MS milliseconds
// per step; POLIS_TEST_SAMPLE_LOG=DIR makes each worker append "epoch index"
// per trained sample to DIR/worker-<rank>-<pid>.log.
int TestSlowWorkerIndex();
int TestSlowWorkerMillis();
std::string TestSampleLogDir();
// POLIS_TEST_PUSH_CAPTURE="DIR:STEP": at parameter-server step STEP, every
// server writes what it received from each worker (DIR/server-<s>-worker-<w>.bin)
// and every worker the gradient it pushed, before encoding
// (DIR/worker-<w>.f32). {"", -1} when unset or malformed.
std::pair<std::string, int64_t> TestPushCapture();

}  // namespace polis::env
