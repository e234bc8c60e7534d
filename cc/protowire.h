// WireReader: a bounds-checked reader of the protocol buffer wire format.
//
// servekit reads saved_model.pb (and sanity-checks .onnx files) without any
// generated protobuf classes, which would tie it to one TensorFlow release. This
// reader walks the fields of one message; length-delimited fields come back as
// views into the input, to be read by a nested WireReader. It never reads past the
// end of its input and reports malformed data through status().
#ifndef SERVEKIT_CC_PROTOWIRE_H_
#define SERVEKIT_CC_PROTOWIRE_H_

#include <cstdint>
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

}  // namespace servekit

#endif  // SERVEKIT_CC_PROTOWIRE_H_
