// SHA-256 (FIPS 180-4), for the artifact digests in manifest.json.
//
// Written here rather than linked from OpenSSL: TensorFlow's libraries export
// BoringSSL's symbols, and mixing the two in one process is unsafe.
#ifndef SERVEKIT_CC_SHA256_H_
#define SERVEKIT_CC_SHA256_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "cc/status.h"

namespace servekit {

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t size);
  void Update(std::string_view bytes) { Update(bytes.data(), bytes.size()); }
  // The digest as 64 lowercase hex characters. The object is spent afterwards.
  std::string HexDigest();

 private:
  void Block(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes
};

std::string Sha256Hex(std::string_view bytes);
// The hex digest of the file at `path`, read in chunks.
StatusOr<std::string> Sha256File(const std::string& path);

}  // namespace servekit

#endif  // SERVEKIT_CC_SHA256_H_
