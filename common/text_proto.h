// Protobuf text files (jobs, studies) parsed with the first error as one
// line: "source:line:col: what" (an unknown field names itself). Free
// function; thread-safe.
#pragma once

#include <google/protobuf/message.h>

#include <string>

#include "common/status.h"

namespace polis {

Status ParseTextMessage(const std::string& text, const std::string& source, google::protobuf::Message* message);

}  // namespace polis
