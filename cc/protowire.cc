#include "cc/protowire.h"

#include <string>

namespace servekit {

bool WireReader::Fail(const std::string& what) {
  status_ = DataLoss("malformed protocol buffer: " + what + " at byte " + std::to_string(pos_));
  pos_ = data_.size();
  return false;
}

bool WireReader::ReadVarint(uint64_t* out) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (pos_ >= data_.size()) return Fail("truncated varint");
    const uint8_t byte = static_cast<uint8_t>(data_[pos_++]);
    if (shift == 63 && byte > 1) return Fail("varint overflows 64 bits");
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *out = result;
      return true;
    }
  }
  return Fail("varint longer than 10 bytes");
}

bool WireReader::Next(WireField* field) {
  if (!status_.ok() || pos_ >= data_.size()) return false;
  uint64_t tag;
  if (!ReadVarint(&tag)) return false;
  const uint64_t number = tag >> 3;
  if (number == 0 || number > 536870911) return Fail("invalid field number " + std::to_string(number));
  field->number = static_cast<uint32_t>(number);
  field->type = static_cast<WireType>(tag & 7);
  field->value = 0;
  field->bytes = std::string_view();
  switch (field->type) {
    case WireType::kVarint:
      return ReadVarint(&field->value);
    case WireType::kFixed64:
    case WireType::kFixed32: {
      const size_t n = field->type == WireType::kFixed64 ? 8 : 4;
      if (data_.size() - pos_ < n) return Fail("truncated fixed-width field " + std::to_string(number));
      uint64_t v = 0;
      for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
      pos_ += n;
      field->value = v;
      return true;
    }
    case WireType::kLengthDelimited: {
      uint64_t length;
      if (!ReadVarint(&length)) return false;
      if (length > data_.size() - pos_) {
        return Fail("field " + std::to_string(number) + " claims " + std::to_string(length) +
                    " bytes, only " + std::to_string(data_.size() - pos_) + " remain");
      }
      field->bytes = data_.substr(pos_, static_cast<size_t>(length));
      pos_ += static_cast<size_t>(length);
      return true;
    }
    default:
      return Fail("unsupported wire type " + std::to_string(tag & 7) + " for field " + std::to_string(number));
  }
}

void WireWriter::AppendVarint(uint64_t value) {
  while (value >= 0x80) {
    data_.push_back(static_cast<char>(value | 0x80));
    value >>= 7;
  }
  data_.push_back(static_cast<char>(value));
}

void WireWriter::Varint(uint32_t number, uint64_t value) {
  AppendVarint((uint64_t{number} << 3) | static_cast<uint64_t>(WireType::kVarint));
  AppendVarint(value);
}

void WireWriter::Bytes(uint32_t number, std::string_view bytes) {
  AppendVarint((uint64_t{number} << 3) | static_cast<uint64_t>(WireType::kLengthDelimited));
  AppendVarint(bytes.size());
  data_.append(bytes.data(), bytes.size());
}

std::string TfConfigProto::Serialize() const {
  // tensorflow.ConfigProto: 1 device_count map<string,int32> (entry: 1 key, 2 value),
  // 2 intra_op_parallelism_threads, 5 inter_op_parallelism_threads, 7 allow_soft_placement.
  WireWriter config;
  if (hide_gpus) {
    WireWriter entry;
    entry.Bytes(1, "GPU");
    entry.Varint(2, 0);
    config.Bytes(1, entry.data());
  }
  if (intra_op_threads != 0) config.Varint(2, static_cast<uint64_t>(int64_t{intra_op_threads}));
  if (inter_op_threads != 0) config.Varint(5, static_cast<uint64_t>(int64_t{inter_op_threads}));
  if (allow_soft_placement) config.Varint(7, 1);
  return config.data();
}

}  // namespace servekit
