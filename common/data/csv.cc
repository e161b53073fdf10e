#include "common/data/csv.h"

#include <unordered_set>

#include "common/fs.h"

namespace polis::data {
namespace {

bool IsBlank(char c) { return c == ' ' || c == '\t'; }

// One record's worth of parsing over `text` from `pos`. Advances pos past the
// record's line end and `line` over every newline consumed (quoted ones
// included). A quote never closed is fatal: the rest of the file would be
// one field.
class RecordParser {
 public:
  RecordParser(std::string_view text, const CsvOptions& options, const std::string& source)
      : text_(text), opt_(options), source_(source) {}

  // True when the line starting at pos holds only blanks and '\r'.
  bool AtBlankLine(size_t pos) const {
    while (pos < text_.size() && text_[pos] != '\n') {
      if (!IsBlank(text_[pos]) && text_[pos] != '\r') return false;
      ++pos;
    }
    return true;
  }

  // Skips a blank line (see AtBlankLine).
  void SkipLine(size_t& pos, int64_t& line) const {
    while (pos < text_.size() && text_[pos] != '\n') ++pos;
    if (pos < text_.size()) {
      ++pos;
      ++line;
    }
  }

  Status Parse(size_t& pos, int64_t& line, CsvRecord& rec) const {
    rec.line = line;
    rec.fields.clear();
    rec.error.clear();
    const size_t n = text_.size();
    while (true) {
      std::string field;
      size_t p = pos;
      while (p < n && IsBlank(text_[p])) ++p;
      if (p < n && text_[p] == opt_.quote) {
        // Quoted field; blanks before the opening quote are ignored.
        const int64_t open_line = line;
        pos = p + 1;
        while (true) {
          if (pos >= n) {
            return DataLoss("{}:{}: the quote opened in field {} is never closed", source_,
                            open_line, rec.fields.size() + 1);
          }
          const char c = text_[pos];
          if (c == opt_.quote) {
            if (pos + 1 < n && text_[pos + 1] == opt_.quote) {
              field.push_back(opt_.quote);
              pos += 2;
              continue;
            }
            ++pos;
            break;
          }
          if (c == '\n') ++line;
          field.push_back(c);
          ++pos;
        }
        while (pos < n && IsBlank(text_[pos])) ++pos;
        if (pos < n && text_[pos] != opt_.delimiter && text_[pos] != '\n' &&
            !(text_[pos] == '\r' && (pos + 1 == n || text_[pos + 1] == '\n'))) {
          if (rec.error.empty()) {
            rec.error = fmt::format("field {} has text after its closing quote",
                                    rec.fields.size() + 1);
          }
          while (pos < n && text_[pos] != opt_.delimiter && text_[pos] != '\n') ++pos;
        }
      } else {
        // One scan to the field's end, one copy (the per-request path of
        // a forecaster's raw rows goes through here).
        const size_t start = pos;
        while (pos < n && text_[pos] != opt_.delimiter && text_[pos] != '\n') ++pos;
        std::string_view value = text_.substr(start, pos - start);
        if (rec.error.empty() && value.find(opt_.quote) != std::string_view::npos) {
          rec.error = fmt::format("field {} has a quote inside an unquoted value", rec.fields.size() + 1);
        }
        // CRLF: the '\r' belongs to the line end, not the field.
        if (!value.empty() && value.back() == '\r' && (pos == n || text_[pos] == '\n')) {
          value.remove_suffix(1);
        }
        field.assign(value);
      }
      rec.fields.push_back(std::move(field));
      if (pos >= n) return Status::Ok();
      if (text_[pos] == '\r') ++pos;  // only reached as part of "\r\n" or "\r<EOF>"
      if (pos >= n) return Status::Ok();
      if (text_[pos] == '\n') {
        ++pos;
        ++line;
        return Status::Ok();
      }
      ++pos;  // the delimiter
    }
  }

 private:
  std::string_view text_;
  const CsvOptions& opt_;
  const std::string& source_;
};

}  // namespace

std::string_view TrimBlanks(std::string_view s) {
  while (!s.empty() && IsBlank(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsBlank(s.back())) s.remove_suffix(1);
  return s;
}

int CsvTable::ColumnIndex(std::string_view name) const {
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == name) return static_cast<int>(i);
  }
  return -1;
}

std::string CsvTable::Where(const CsvRecord& record) const {
  return fmt::format("{}:{}: ", source, record.line);
}

StatusOr<CsvTable> ParseCsv(std::string_view text, const std::string& source,
                            const CsvOptions& options) {
  if (options.delimiter == options.quote || options.delimiter == '\n' ||
      options.quote == '\n') {
    return InvalidArgument("CSV options for '{}': delimiter and quote must differ and not be a "
                           "newline", source);
  }
  if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  CsvTable table;
  table.source = source;
  RecordParser parser(text, options, source);
  size_t pos = 0;
  int64_t line = 1;
  bool have_header = false;
  CsvRecord rec;
  while (pos < text.size()) {
    if (parser.AtBlankLine(pos)) {
      parser.SkipLine(pos, line);
      ++table.blank_lines;
      continue;
    }
    POLIS_RETURN_IF_ERROR(parser.Parse(pos, line, rec));
    if (!have_header) {
      if (!rec.error.empty()) return InvalidArgument("{}:{}: header: {}", source, rec.line, rec.error);
      std::unordered_set<std::string> seen;
      for (size_t i = 0; i < rec.fields.size(); ++i) {
        std::string name(TrimBlanks(rec.fields[i]));
        if (name.empty()) {
          return InvalidArgument("{}:{}: header column {} has no name", source, rec.line, i + 1);
        }
        if (!seen.insert(name).second) {
          return InvalidArgument("{}:{}: header names column '{}' twice", source, rec.line, name);
        }
        table.header.push_back(std::move(name));
      }
      have_header = true;
      continue;
    }
    if (rec.error.empty() && rec.fields.size() != table.header.size()) {
      rec.error = fmt::format("has {} fields; the header has {}", rec.fields.size(),
                              table.header.size());
    }
    table.records.push_back(std::move(rec));
    rec = CsvRecord();
  }
  if (!have_header) return InvalidArgument("'{}' is empty: expected a header row", source);
  return table;
}

StatusOr<CsvTable> ReadCsvFile(const std::string& path, const CsvOptions& options) {
  POLIS_ASSIGN_OR_RETURN(std::string text, ReadMaybeGzip(path));
  return ParseCsv(text, path, options);
}

Status SplitCsvLineInto(std::string_view line, CsvRecord* record, const CsvOptions& options) {
  if (line.find('\n') != std::string_view::npos) {
    return InvalidArgument("CSV line holds a newline; pass one record per line");
  }
  static const std::string kSource = "line";
  RecordParser parser(line, options, kSource);
  size_t pos = 0;
  int64_t ln = record->line;
  return parser.Parse(pos, ln, *record);
}

StatusOr<std::vector<std::string>> SplitCsvLine(std::string_view line, const CsvOptions& options) {
  CsvRecord rec;
  rec.line = 1;
  POLIS_RETURN_IF_ERROR(SplitCsvLineInto(line, &rec, options));
  if (!rec.error.empty()) return InvalidArgument("CSV line: {}", rec.error);
  return std::move(rec.fields);
}

}  // namespace polis::data
