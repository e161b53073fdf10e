#include "common/text_proto.h"

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/text_format.h>

#include "common/echo.h"

namespace polis {
namespace {

class Collector : public google::protobuf::io::ErrorCollector {
 public:
  explicit Collector(std::string source) : source_(std::move(source)) {}
  void AddError(int line, google::protobuf::io::ColumnNumber col, const std::string& message) override {
    if (first_.empty()) first_ = fmt::format("{}:{}:{}: {}", source_, line + 1, col + 1, EchoValue(message, 200));
  }
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  const std::string& first() const { return first_; }

 private:
  std::string source_, first_;
};

}  // namespace

Status ParseTextMessage(const std::string& text, const std::string& source, google::protobuf::Message* message) {
  google::protobuf::TextFormat::Parser parser;
  Collector collector(source);
  parser.RecordErrorsTo(&collector);
  if (!parser.ParseFromString(text, message))
    return InvalidArgument("{}", collector.first().empty() ? source + ": cannot parse " + message->GetTypeName()
                                                           : collector.first());
  return Status::Ok();
}

}  // namespace polis
