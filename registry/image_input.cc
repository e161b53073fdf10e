#include "registry/image_input.h"

#include <openssl/evp.h>

#include <fmt/format.h>

#include "common/data/image_codec.h"
#include "common/data/shard_dataset.h"
#include "common/echo.h"

namespace polis::registry {
namespace {

using json = nlohmann::json;

bool IsBase64Char(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

}  // namespace

std::optional<ImageInputSpec> ImageInputOf(const proto::ArtifactHeader& h) {
  const auto format = h.job().dataset().format();
  if (format != proto::DatasetSpec::IDX && format != proto::DatasetSpec::SHARDS) return std::nullopt;
  if (h.job().dataset().has_timeseries()) return std::nullopt;  // SHARDS of a time series' windows
  if (h.input_shape_size() != 3) return std::nullopt;
  const int64_t c = h.input_shape(0), height = h.input_shape(1), width = h.input_shape(2);
  if ((c != 1 && c != 3) || height < 1 || width < 1 || height > 65535 || width > 65535)
    return std::nullopt;
  ImageInputSpec s;
  s.channels = static_cast<int>(c);
  s.height = static_cast<int>(height);
  s.width = static_cast<int>(width);
  s.scale = h.job().dataset().scale();
  s.shift = h.job().dataset().shift();
  return s;
}

Status PreprocessImage(std::string_view file, const ImageInputSpec& spec, float* chw) {
  POLIS_ASSIGN_OR_RETURN(data::Pixels px, data::DecodeImage(file, spec.channels, spec.max_pixels));
  // Training resized at `polis-data pack` time with this same function.
  if (px.height != spec.height || px.width != spec.width) px = data::Resize(px, spec.height, spec.width);
  // The evaluation path of training (no augmentation): one function for both.
  data::ImageToFloats(px.hwc.data(), px.height, px.width, px.channels, nullptr, 0, spec.scale, spec.shift,
                      chw);
  return Status::Ok();
}

std::string Base64Encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

StatusOr<std::string> Base64Decode(std::string_view text) {
  // OpenSSL decodes; the checks here only make its refusal say where.
  size_t padding = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '=' && i + 2 >= text.size()) {
      if (i + 1 < text.size() && text[i + 1] != '=')
        return InvalidArgument("not base64: '=' at offset {} is followed by '{}'", i, EchoValue(text.substr(i + 1, 1)));
      ++padding;
      continue;
    }
    if (!IsBase64Char(c))
      return InvalidArgument("not base64: {} at offset {}",
                             c >= 0x20 && c < 0x7f ? fmt::format("character '{}'", static_cast<char>(c))
                                                   : fmt::format("byte 0x{:02x}", c),
                             i);
  }
  if (text.size() % 4 != 0)
    return InvalidArgument("not base64: {} characters; padded base64 has a multiple of 4", text.size());
  std::string out(text.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()),
                                static_cast<int>(text.size()));
  if (n < 0 || static_cast<size_t>(n) != out.size()) return InvalidArgument("not base64 (OpenSSL refused it)");
  out.resize(out.size() - padding);  // EVP_DecodeBlock counts the padding as zero bytes
  return out;
}

StatusOr<DecodedInput> DecodeImageTensor(const json& tensor, const ImageInputSpec& spec,
                                         const std::string_view* binary, bool* too_large) {
  *too_large = false;
  const std::string who = fmt::format("input '{}'", kImageInputName);
  if (!tensor.is_object()) return InvalidArgument("{}: a tensor must be a JSON object", who);
  auto dt = tensor.find("datatype");
  if (dt == tensor.end() || !dt->is_string() || dt->get<std::string>() != "BYTES")
    return InvalidArgument("{}: datatype must be \"BYTES\" (one PNG or JPEG file per element), got {}", who,
                           dt == tensor.end() ? "none" : EchoValue(dt->dump()));
  auto sh = tensor.find("shape");
  if (sh == tensor.end() || !sh->is_array() || sh->size() != 1 || !(*sh)[0].is_number_integer() ||
      (*sh)[0].get<int64_t>() < 1)
    return InvalidArgument("{}: \"shape\" must be [N] with N >= 1, the number of files; got {}", who,
                           sh == tensor.end() ? "none" : EchoValue(sh->dump()));
  const int64_t n = (*sh)[0].get<int64_t>();
  if (n > spec.max_batch)
    return InvalidArgument("{}: {} files exceed the model's max_batch_size {}", who, n, spec.max_batch);
  const int64_t per_image = int64_t{spec.channels} * spec.height * spec.width;
  if (spec.max_elements > 0 && n * per_image > spec.max_elements) {
    *too_large = true;
    return InvalidArgument("{}: {} files of {}x{}x{} values exceed the limit of {} elements per tensor "
                           "(--max-tensor-elements)",
                           who, n, spec.channels, spec.height, spec.width, spec.max_elements);
  }
  // The files: binary data, or base64 strings in "data".
  std::vector<std::string> decoded;
  std::vector<std::string_view> files;
  if (binary) {
    POLIS_ASSIGN_OR_RETURN(files, SplitBinaryBytes(*binary, who));
  } else {
    auto data = tensor.find("data");
    if (data == tensor.end() || !data->is_array())
      return InvalidArgument("{}: \"data\" must be an array of {} strings, each a PNG or JPEG file "
                             "base64-encoded (or send the files as binary data)",
                             who, n);
    decoded.reserve(data->size());
    for (size_t i = 0; i < data->size(); ++i) {
      const json& e = (*data)[i];
      if (!e.is_string())
        return InvalidArgument("{} element {}: {}, expected a string (the file base64-encoded)", who, i,
                               e.type_name());
      auto bytes = Base64Decode(e.get_ref<const std::string&>());
      if (!bytes.ok())
        return InvalidArgument("{} element {}: {} (in JSON, send each file base64-encoded)", who, i,
                               bytes.status().message());
      decoded.push_back(std::move(bytes).value());
    }
    files.assign(decoded.begin(), decoded.end());
  }
  if (static_cast<int64_t>(files.size()) != n)
    return InvalidArgument("{}: {} files for shape [{}]", who, files.size(), n);
  DecodedInput out;
  out.rows = n;
  out.datatype = "BYTES";
  out.values.resize(static_cast<size_t>(n * per_image));
  for (int64_t i = 0; i < n; ++i) {
    Status st = PreprocessImage(files[i], spec, out.values.data() + i * per_image);
    if (!st.ok()) return InvalidArgument("{} element {}: {}", who, i, st.message());
  }
  return out;
}

}  // namespace polis::registry
