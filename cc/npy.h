// Reading and writing NumPy .npy files: the reference data of an export.
//
// Versions 1.0, 2.0 and 3.0; little-endian (or byte-order-free) numeric and bool
// dtypes in C order; strings as `|S<n>` (UTF-8 bytes NUL-padded to n; trailing NULs
// are stripped on reading, docs/manifest.md) and, for convenience, `<U<n>` (read as
// UTF-8). Everything else (Fortran order, big-endian, objects, structured dtypes,
// malformed or truncated files) is rejected with a Status naming the problem.
// Writing produces version 1.0, `|S<n>` for strings.
#ifndef SERVEKIT_CC_NPY_H_
#define SERVEKIT_CC_NPY_H_

#include <optional>
#include <string>
#include <string_view>

#include "cc/status.h"
#include "cc/tensor.h"

namespace servekit {

// Parses the bytes of a .npy file; `what` names it in errors (e.g. the path).
StatusOr<Tensor> ParseNpy(std::string_view bytes, const std::string& what);
StatusOr<Tensor> ReadNpy(const std::string& path);
// ReadNpy for a tensor whose dtype the caller knows (a signature's). .npy has no
// bfloat16: servekit stores a bfloat16 tensor's values as float32, exactly
// (docs/manifest.md), and a float32 file read as bfloat16 is narrowed back here.
// Anything else is returned as stored, for the caller to check.
StatusOr<Tensor> ReadNpyAs(const std::string& path, std::optional<DType> dtype);

std::string SerializeNpy(const Tensor& tensor);
Status WriteNpy(const std::string& path, const Tensor& tensor);

}  // namespace servekit

#endif  // SERVEKIT_CC_NPY_H_
