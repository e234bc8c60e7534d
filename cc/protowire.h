// The protocol buffer wire format, read and written without generated classes.
//
// servekit reads saved_model.pb (and sanity-checks .onnx files) and writes the one
// message TensorFlow's C API wants from it (ConfigProto) without any generated
// protobuf classes, which would tie it to one TensorFlow release.
//
// WireReader walks the fields of one message; length-delimited fields come back as
// views into the input, to be read by a nested WireReader. It never reads past the
// end of its input and reports malformed data through status(). WireWriter appends
// fields; TfConfigProto is the few ConfigProto fields servekit sets.
#ifndef SERVEKIT_CC_PROTOWIRE_H_
#define SERVEKIT_CC_PROTOWIRE_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "cc/status.h"

namespace servekit {

enum class WireType : uint8_t {
  kVarint = 0,
  kFixed64 = 1,
  kLengthDelimited = 2,
  kStartGroup = 3,  // deprecated groups: reported as malformed
  kEndGroup = 4,
  kFixed32 = 5,
};

struct WireField {
  uint32_t number = 0;
  WireType type = WireType::kVarint;
  uint64_t value = 0;      // varint, fixed64 or fixed32 payload
  std::string_view bytes;  // length-delimited payload
};

class WireReader {
 public:
  explicit WireReader(std::string_view data) : data_(data) {}

  // Reads the next field. False at the end of the message or on malformed data
  // (then status() says what and where).
  bool Next(WireField* field);
  const Status& status() const { return status_; }

 private:
  bool ReadVarint(uint64_t* out);
  bool Fail(const std::string& what);

  std::string_view data_;
  size_t pos_ = 0;
  Status status_;
};

class WireWriter {
 public:
  // An integer field (int32 values are sign-extended to 64 bits, as protobuf does).
  void Varint(uint32_t number, uint64_t value);
  // A string, bytes or nested message field.
  void Bytes(uint32_t number, std::string_view bytes);
  const std::string& data() const { return data_; }

 private:
  void AppendVarint(uint64_t value);
  std::string data_;
};

// The tensorflow.ConfigProto fields servekit sets when it opens a TF session.
struct TfConfigProto {
  bool hide_gpus = false;           // device_count {"GPU": 0}
  int32_t intra_op_threads = 0;     // 0: not set (TensorFlow's default)
  int32_t inter_op_threads = 0;     // 0: not set; negative: ops in the calling thread
  bool allow_soft_placement = true;
  // The message in wire format, fields in field-number order.
  std::string Serialize() const;
};

}  // namespace servekit

#endif  // SERVEKIT_CC_PROTOWIRE_H_
