// Pieces: the messages of one parameter-server round.
//
// A worker pushes its gradient as backward produces it, so a round is cut
// into pieces: consecutive layers, from the last to the first, grouped until
// a group holds at least `piece_bytes` (small layers share a message, a
// layer is never split for size), and each group cut at the servers'
// key-range boundaries (a layer that straddles two servers becomes two
// pieces). Pulls use the same pieces, so the next forward can wait for
// layer i's parameters alone. Workers and servers compute the plan from the
// model and the job, so no message describes it.
//
// Wire: every piece travels with its own tag (kTagPushPieceBase + its index
// among its server's pieces, kTagPullPieceBase + the same for the reply),
// so pieces may be sent, and may arrive, in any order.
#pragma once

#include <cstdint>
#include <vector>

#include "common/comm/key_ranges.h"
#include "common/nn/model.h"

namespace polis::comm {

constexpr int kTagPushPieceBase = 4096;
constexpr int kTagPullPieceBase = 16384;
constexpr int kMaxPiecesPerServer = 8192;  // tags stay below MPI's guaranteed 32767

struct Piece {
  int64_t begin = 0, end = 0;  // floats of the flat buffer
  int server = 0;              // index into the key ranges
  int slot = 0;                // index among its server's pieces (the tag offset)
  int first_layer = 0;         // lowest layer touched: final once backward finished it
  int last_layer = 0;          // highest layer touched
  int64_t size() const { return end - begin; }
};

// The span of the flat buffer each layer owns: (offset, count) per layer.
struct LayerSpan {
  int64_t offset = 0, count = 0;
};
std::vector<LayerSpan> LayerSpans(const nn::Model& model);

// Pieces in the order backward produces them (last layer first). piece_bytes:
//   > 0  group consecutive layers into messages of at least this many bytes;
//   0    one group per layer with parameters;
//   < 0  one group for the whole buffer: one message per server per round,
//        and pulls are waited for as a whole (no overlap).
// Layers without parameters are skipped. Covers [0, total) exactly.
std::vector<Piece> PlanPieces(const std::vector<LayerSpan>& layers,
                              const std::vector<KeyRange>& ranges, int64_t piece_bytes);

// Convenience for the roles: the model's spans and PartitionByBytes.
std::vector<Piece> PlanPieces(const nn::Model& model, int servers, int64_t piece_bytes);

}  // namespace polis::comm
