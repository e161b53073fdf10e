// A small RFC 4180-ish CSV reader: a header row, then records.
//
// Accepted: quoted fields ("a,b", "say ""hi""", a quoted newline), CRLF, LF
// or mixed line ends, a UTF-8 byte-order mark, blank lines (skipped, but
// still counted so line numbers match an editor's). Every record keeps the
// line it starts on, so callers can write "hour.csv:1234: ...".
//
// Two kinds of problems: a problem with one record (the wrong number of
// fields, text after a closing quote) is kept in CsvRecord::error and the
// caller decides by its own policy whether to fail or drop the record; a
// problem that makes the rest of the file unreadable (a quote never closed,
// a bad header) fails the whole parse. Thread-safe: no shared state.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace polis::data {

struct CsvOptions {
  char delimiter = ',';
  char quote = '"';
};

struct CsvRecord {
  int64_t line = 0;                 // 1-based line the record starts on
  std::vector<std::string> fields;  // unquoted; unquoted fields are not trimmed
  std::string error;                // empty, or why this record is malformed
};

struct CsvTable {
  std::string source;               // the name used in messages (the path)
  std::vector<std::string> header;  // trimmed column names, all distinct
  std::vector<CsvRecord> records;   // in file order, blank lines left out
  int64_t blank_lines = 0;

  // Index of `name` in the header, or -1.
  int ColumnIndex(std::string_view name) const;
  // "source:line: " for messages about a record.
  std::string Where(const CsvRecord& record) const;
};

// Parses `text`; `source` names it in messages.
StatusOr<CsvTable> ParseCsv(std::string_view text, const std::string& source,
                            const CsvOptions& options = {});
// Reads (inflating gzip if present) and parses a file.
StatusOr<CsvTable> ReadCsvFile(const std::string& path, const CsvOptions& options = {});

// Splits one line (no line end) into fields with the same quoting rules; for
// serving callers that receive rows one at a time. Fails on a bad quote.
StatusOr<std::vector<std::string>> SplitCsvLine(std::string_view line,
                                                const CsvOptions& options = {});
// The same into `record` (its fields' storage is reused): a problem with
// the record (text after a closing quote) is left in record->error; a bad
// quote or a newline fails.
Status SplitCsvLineInto(std::string_view line, CsvRecord* record, const CsvOptions& options = {});

// Spaces and tabs removed from both ends.
std::string_view TrimBlanks(std::string_view s);

}  // namespace polis::data
