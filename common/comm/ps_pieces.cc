#include "common/comm/ps_pieces.h"

#include <algorithm>

#include "common/status.h"

namespace polis::comm {

std::vector<LayerSpan> LayerSpans(const nn::Model& model) {
  std::vector<LayerSpan> out;
  for (const auto& l : model.layers()) out.push_back({l.param_offset, l.param_count});
  return out;
}

namespace {

struct Group {
  int64_t begin, end;
  int first_layer, last_layer;
};

std::vector<Group> GroupLayers(const std::vector<LayerSpan>& layers, int64_t piece_bytes) {
  std::vector<Group> out;
  const int n = static_cast<int>(layers.size());
  if (piece_bytes < 0) {
    int first = -1, last = -1;
    int64_t begin = 0, end = 0;
    for (int i = 0; i < n; ++i) {
      if (layers[i].count == 0) continue;
      if (first < 0) {
        first = i;
        begin = layers[i].offset;
      }
      last = i;
      end = layers[i].offset + layers[i].count;
    }
    if (first >= 0) out.push_back({begin, end, first, last});
    return out;
  }
  bool open = false;
  Group g{};
  for (int i = n - 1; i >= 0; --i) {
    if (layers[i].count == 0) continue;
    if (!open) {
      g = {layers[i].offset, layers[i].offset + layers[i].count, i, i};
      open = true;
    } else {
      g.begin = layers[i].offset;
      g.first_layer = i;
    }
    if (piece_bytes == 0 || (g.end - g.begin) * static_cast<int64_t>(sizeof(float)) >= piece_bytes) {
      out.push_back(g);
      open = false;
    }
  }
  if (open) out.push_back(g);
  return out;
}

std::vector<Piece> CutAtServers(const std::vector<Group>& groups, const std::vector<KeyRange>& ranges) {
  std::vector<Piece> out;
  std::vector<int> slots(ranges.size(), 0);
  for (const Group& g : groups) {
    // Groups run from the top of the buffer down; so do their pieces.
    for (int s = static_cast<int>(ranges.size()) - 1; s >= 0; --s) {
      const int64_t b = std::max(g.begin, ranges[s].begin), e = std::min(g.end, ranges[s].end);
      if (b >= e) continue;
      out.push_back({b, e, s, slots[s]++, g.first_layer, g.last_layer});
    }
  }
  return out;
}

}  // namespace

std::vector<Piece> PlanPieces(const std::vector<LayerSpan>& layers, const std::vector<KeyRange>& ranges,
                              int64_t piece_bytes) {
  POLIS_ENFORCE(!ranges.empty());
  std::vector<Piece> pieces;
  while (true) {
    pieces = CutAtServers(GroupLayers(layers, piece_bytes), ranges);
    std::vector<int> per(ranges.size(), 0);
    for (const Piece& p : pieces) ++per[p.server];
    if (*std::max_element(per.begin(), per.end()) <= kMaxPiecesPerServer) break;
    // Too many messages for the tag space: group more layers per piece.
    piece_bytes = piece_bytes <= 0 ? 4096 : piece_bytes * 2;
  }
  return pieces;
}

std::vector<Piece> PlanPieces(const nn::Model& model, int servers, int64_t piece_bytes) {
  return PlanPieces(LayerSpans(model), PartitionByBytes(model.parameter_count(), servers), piece_bytes);
}

}  // namespace polis::comm
