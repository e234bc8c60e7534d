// libFuzzer target: the .npy reader on arbitrary bytes; what parses must round-trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cc/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto tensor = servekit::ParseNpy(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz input");
  if (!tensor.ok() || tensor->dtype() == servekit::DType::kBFloat16) return 0;
  auto again = servekit::ParseNpy(servekit::SerializeNpy(*tensor), "round trip");
  if (!again.ok() || again->Describe() != tensor->Describe()) std::abort();
  if (tensor->is_string() ? again->strings() != tensor->strings()
                          : std::string_view(static_cast<const char*>(again->data()), again->byte_size()) !=
                                std::string_view(static_cast<const char*>(tensor->data()), tensor->byte_size())) {
    std::abort();
  }
  return 0;
}
