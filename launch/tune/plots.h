// The study's charts, drawn by common/png.h:
//   curves.png  the objective against epochs for every trial (one colour a
//               trial; an X where ASHA stopped a trial; the best trial
//               thick and black), with the best so far in the title
//   params.png  for each searched field, its value against each trial's
//               final objective (a log axis when the values span 20x or
//               more and are positive; enum and string values side by side)
// Pure functions of the state; thread-safe.
#pragma once

#include <string>

#include "common/status.h"
#include "launch/tune/study_state.h"

namespace polis::tune {

std::string CurvesPng(const StudyState& s);
std::string ParamsPng(const StudyState& s);

// Writes both into `dir` (crash-safely).
Status WriteStudyPlots(const StudyState& s, const std::string& dir);

}  // namespace polis::tune
