#include "cc/npy.h"

#include <cctype>
#include <cstdint>
#include <cstring>
#include <limits>

#include "cc/file_util.h"

namespace servekit {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicSize = 6;
constexpr size_t kMaxHeader = 1 << 20;

// The header is a Python dict literal, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// This tokenizer accepts exactly the subset numpy writes (and whitespace variations).
class HeaderParser {
 public:
  explicit HeaderParser(std::string_view text) : text_(text) {}

  Status Parse(std::string* descr, bool* fortran, Shape* shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    if (!Consume('{')) return Error("expected '{'");
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      std::string key;
      if (!ParseString(&key)) return Error("expected a quoted key");
      if (!Consume(':')) return Error("expected ':' after '" + key + "'");
      if (key == "descr") {
        if (!ParseString(descr)) return Error("'descr' is not a string");
        have_descr = true;
      } else if (key == "fortran_order") {
        SkipSpace();
        if (text_.substr(pos_, 4) == "True") {
          *fortran = true;
          pos_ += 4;
        } else if (text_.substr(pos_, 5) == "False") {
          *fortran = false;
          pos_ += 5;
        } else {
          return Error("'fortran_order' is not True or False");
        }
        have_fortran = true;
      } else if (key == "shape") {
        SERVEKIT_RETURN_IF_ERROR(ParseShape(shape));
        have_shape = true;
      } else {
        return Error("unknown key '" + key + "'");
      }
      SkipSpace();
      if (Consume(',')) continue;
      if (Consume('}')) break;
      return Error("expected ',' or '}'");
    }
    SkipSpace();
    if (pos_ != text_.size()) return Error("trailing characters after the dict");
    if (!have_descr || !have_fortran || !have_shape) {
      return Error("the header must have 'descr', 'fortran_order' and 'shape'");
    }
    return Status::Ok();
  }

 private:
  Status Error(const std::string& what) const {
    return DataLoss("malformed .npy header (" + what + " at offset " + std::to_string(pos_) + ")");
  }
  void SkipSpace() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  bool Consume(char c) {
    SkipSpace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool ParseString(std::string* out) {
    SkipSpace();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) return false;
    const char quote = text_[pos_++];
    const size_t end = text_.find(quote, pos_);
    if (end == std::string_view::npos) return false;
    *out = std::string(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return true;
  }
  Status ParseShape(Shape* shape) {
    shape->clear();
    if (!Consume('(')) return Error("'shape' is not a tuple");
    while (true) {
      SkipSpace();
      if (Consume(')')) return Status::Ok();
      size_t start = pos_;
      int64_t value = 0;
      while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) {
        if (value > (std::numeric_limits<int64_t>::max() - 9) / 10) return Error("dimension too large");
        value = value * 10 + (text_[pos_] - '0');
        ++pos_;
      }
      if (pos_ == start) return Error("expected a dimension");
      if (pos_ < text_.size() && text_[pos_] == 'L') ++pos_;  // Python 2 longs
      if (shape->size() >= 64) return Error("more than 64 dimensions");
      shape->push_back(value);
      if (Consume(',')) continue;
      if (Consume(')')) return Status::Ok();
      return Error("expected ',' or ')' in 'shape'");
    }
  }

  std::string_view text_;
  size_t pos_ = 0;
};

struct Descr {
  DType dtype;
  size_t item_size;     // bytes per element in the file
  bool utf32 = false;   // '<U<n>': n UTF-32 code units per element
};

StatusOr<Descr> ParseDescr(const std::string& descr) {
  if (descr.size() < 2) return DataLoss("unsupported .npy dtype '" + descr + "'");
  const char order = descr[0];
  const std::string code = descr.substr(1);
  if (order == '>') {
    return Unimplemented("big-endian .npy data ('" + descr + "') is not supported; save it little-endian");
  }
  if (order != '<' && order != '|' && order != '=') {
    return DataLoss("unsupported .npy dtype '" + descr + "'");
  }
  if (code[0] == 'S' || code[0] == 'U') {
    size_t n = 0;
    if (code.size() < 2 || code.size() > 10) return DataLoss("unsupported .npy dtype '" + descr + "'");
    for (size_t i = 1; i < code.size(); ++i) {
      if (!std::isdigit(static_cast<unsigned char>(code[i]))) {
        return DataLoss("unsupported .npy dtype '" + descr + "'");
      }
      n = n * 10 + (code[i] - '0');
    }
    if (code[0] == 'S') return Descr{DType::kString, n, false};
    if (order == '|' && n != 0) return DataLoss("unsupported .npy dtype '" + descr + "'");
    return Descr{DType::kString, n * 4, true};
  }
  static const struct { const char* code; DType dtype; } kCodes[] = {
      {"f2", DType::kFloat16}, {"f4", DType::kFloat32}, {"f8", DType::kFloat64},
      {"i1", DType::kInt8},    {"i2", DType::kInt16},   {"i4", DType::kInt32},  {"i8", DType::kInt64},
      {"u1", DType::kUInt8},   {"u2", DType::kUInt16},  {"u4", DType::kUInt32}, {"u8", DType::kUInt64},
      {"b1", DType::kBool},    {"?", DType::kBool},
  };
  for (const auto& c : kCodes) {
    if (code == c.code) return Descr{c.dtype, DTypeSize(c.dtype), false};
  }
  return Unimplemented("unsupported .npy dtype '" + descr + "' (servekit reads " +
                       "f2 f4 f8 i1-i8 u1-u8 b1 S<n> U<n>)");
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

}  // namespace

StatusOr<Tensor> ParseNpy(std::string_view bytes, const std::string& what) {
  auto fail = [&what](const Status& s) { return s.WithContext(what); };
  if (bytes.size() < kMagicSize + 2 || std::memcmp(bytes.data(), kMagic, kMagicSize) != 0) {
    return fail(DataLoss("not a .npy file (bad magic)"));
  }
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0;
  size_t offset = 0;
  if (major == 1) {
    if (bytes.size() < 10) return fail(DataLoss("truncated .npy header"));
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return fail(DataLoss("truncated .npy header"));
    for (int i = 3; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + i]);
    offset = 12;
  } else {
    return fail(Unimplemented(".npy format version " + std::to_string(major) + " is not supported"));
  }
  if (header_len > kMaxHeader || header_len > bytes.size() - offset) {
    return fail(DataLoss("truncated .npy header"));
  }
  std::string descr;
  bool fortran = false;
  Shape shape;
  HeaderParser parser(bytes.substr(offset, header_len));
  Status st = parser.Parse(&descr, &fortran, &shape);
  if (!st.ok()) return fail(st);
  if (fortran) return fail(Unimplemented("Fortran-order .npy data is not supported"));
  auto parsed = ParseDescr(descr);
  if (!parsed.ok()) return fail(parsed.status());
  const Descr d = *parsed;
  auto count = NumElements(shape);
  if (!count.ok()) return fail(count.status());
  const uint64_t n = static_cast<uint64_t>(*count);
  const std::string_view payload = bytes.substr(offset + header_len);
  if (d.item_size != 0 && n > payload.size() / d.item_size + 1) {
    return fail(DataLoss("truncated .npy data: shape " + ShapeToString(shape) + " of '" + descr +
                         "' needs more than the " + std::to_string(payload.size()) + " bytes present"));
  }
  if (d.item_size == 0 && n > (uint64_t{1} << 24)) {
    return fail(DataLoss("implausible .npy shape " + ShapeToString(shape) + " for '" + descr + "'"));
  }
  const uint64_t need = n * d.item_size;
  if (payload.size() != need) {
    return fail(DataLoss((payload.size() < need ? "truncated .npy data: " : "extra bytes in .npy data: ") +
                         std::string("expected ") + std::to_string(need) + " bytes for " + descr +
                         ShapeToString(shape) + ", found " + std::to_string(payload.size())));
  }
  if (d.dtype == DType::kString) {
    std::vector<std::string> values;
    values.reserve(n);
    for (uint64_t i = 0; i < n; ++i) {
      std::string_view raw = payload.substr(i * d.item_size, d.item_size);
      std::string value;
      if (d.utf32) {
        for (size_t k = 0; k + 4 <= raw.size(); k += 4) {
          uint32_t cp = static_cast<unsigned char>(raw[k]) | (static_cast<unsigned char>(raw[k + 1]) << 8) |
                        (static_cast<unsigned char>(raw[k + 2]) << 16) |
                        (static_cast<uint32_t>(static_cast<unsigned char>(raw[k + 3])) << 24);
          if (cp > 0x10ffff) return fail(DataLoss("invalid code point in '" + descr + "' data"));
          AppendUtf8(cp, &value);
        }
      } else {
        value.assign(raw.data(), raw.size());
      }
      while (!value.empty() && value.back() == '\0') value.pop_back();
      values.push_back(std::move(value));
    }
    auto t = Tensor::FromStrings(shape, std::move(values));
    if (!t.ok()) return fail(t.status());
    return t;
  }
  auto t = Tensor::Allocate(d.dtype, shape);
  if (!t.ok()) return fail(t.status());
  if (need != 0) std::memcpy(t->mutable_data(), payload.data(), need);
  if (d.dtype == DType::kBool) {
    auto* b = static_cast<uint8_t*>(t->mutable_data());
    for (uint64_t i = 0; i < n; ++i) {
      if (b[i] > 1) return fail(DataLoss("bool .npy data holds a byte other than 0 or 1"));
    }
  }
  return t;
}

StatusOr<Tensor> ReadNpy(const std::string& path) {
  SERVEKIT_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return ParseNpy(bytes, path);
}

StatusOr<Tensor> ReadNpyAs(const std::string& path, std::optional<DType> dtype) {
  SERVEKIT_ASSIGN_OR_RETURN(Tensor t, ReadNpy(path));
  if (dtype != DType::kBFloat16 || t.dtype() != DType::kFloat32) return t;
  SERVEKIT_ASSIGN_OR_RETURN(Tensor narrow, Tensor::AllocateUninitialized(DType::kBFloat16, t.shape()));
  const float* wide = t.data_as<float>();
  uint16_t* bits = static_cast<uint16_t*>(narrow.mutable_data());
  for (int64_t i = 0; i < t.num_elements(); ++i) bits[i] = DoubleToBFloat16(wide[i]);
  return narrow;
}

std::string SerializeNpy(const Tensor& tensor) {
  std::string descr;
  size_t width = 0;
  if (tensor.is_string()) {
    for (const auto& s : tensor.strings()) width = std::max(width, s.size());
    if (width == 0) width = 1;
    descr = "|S" + std::to_string(width);
  } else {
    static const char* const kCodes[] = {"<f2", "", "<f4", "<f8", "|i1", "<i2", "<i4", "<i8",
                                         "|u1", "<u2", "<u4", "<u8", "|b1", ""};
    descr = kCodes[static_cast<int>(tensor.dtype())];
  }
  std::string shape = "(";
  for (size_t i = 0; i < tensor.shape().size(); ++i) {
    shape += std::to_string(tensor.shape()[i]);
    shape += tensor.shape().size() == 1 ? "," : (i + 1 < tensor.shape().size() ? ", " : "");
  }
  shape += ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces so that magic + version + length + header + '\n' is a multiple of 64.
  const size_t total = kMagicSize + 4 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string out(kMagic, kMagicSize);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>((header.size() >> 8) & 0xff));
  out += header;
  if (tensor.is_string()) {
    for (const auto& s : tensor.strings()) {
      out += s;
      out.append(width - s.size(), '\0');
    }
  } else if (tensor.byte_size() != 0) {
    out.append(static_cast<const char*>(tensor.data()), tensor.byte_size());
  }
  return out;
}

Status WriteNpy(const std::string& path, const Tensor& tensor) {
  if (tensor.dtype() == DType::kBFloat16) {
    return Unimplemented("bfloat16 has no .npy dtype; cannot write " + path);
  }
  return WriteFile(path, SerializeNpy(tensor));
}

}  // namespace servekit
