// Tensor: a host tensor as servekit passes it between files, runtimes and Python.
//
// A Tensor is a dtype, a shape and its elements: contiguous little-endian bytes in C
// order for numeric and bool types (bool is one byte, 0 or 1), or one std::string per
// element for string. The bytes are either owned (Allocate, Copy) or a *view* of
// memory someone else owns (View): a NumPy array, an ONNX Runtime or TensorFlow output.
// `owner()` keeps that memory alive for as long as any copy of the Tensor exists, so
// copies of a Tensor are cheap and shallow.
#ifndef SERVEKIT_CC_TENSOR_H_
#define SERVEKIT_CC_TENSOR_H_

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cc/dtype.h"
#include "cc/status.h"

namespace servekit {

using Shape = std::vector<int64_t>;

// The element count of `shape`; an error for negative sizes or overflow.
StatusOr<int64_t> NumElements(const Shape& shape);
// "[2,3]"; "[]" for a scalar.
std::string ShapeToString(const Shape& shape);

class Tensor {
 public:
  Tensor() = default;  // an empty float32 tensor of shape [0]

  // A zero-filled tensor that owns its storage (empty strings for string).
  static StatusOr<Tensor> Allocate(DType dtype, Shape shape);
  // The same without zero-filling numeric bytes, for buffers a runtime overwrites.
  static StatusOr<Tensor> AllocateUninitialized(DType dtype, Shape shape);
  // A view of `nbytes` bytes at `data`, kept alive by `owner` (may be null when the
  // caller guarantees the memory outlives every use). Not for string.
  static StatusOr<Tensor> View(DType dtype, Shape shape, const void* data, size_t nbytes,
                               std::shared_ptr<const void> owner);
  // A string tensor owning `values` (one per element, C order).
  static StatusOr<Tensor> FromStrings(Shape shape, std::vector<std::string> values);
  // A numeric tensor holding a copy of `values`; sizeof(T) must match the dtype.
  template <typename T>
  static StatusOr<Tensor> FromVector(DType dtype, Shape shape, const std::vector<T>& values);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t num_elements() const { return num_elements_; }
  // Bytes of numeric data (0 for string).
  size_t byte_size() const { return byte_size_; }
  bool is_string() const { return dtype_ == DType::kString; }

  // Numeric data (nullptr for string or empty tensors).
  const void* data() const { return data_; }
  template <typename T>
  const T* data_as() const { return static_cast<const T*>(data_); }
  // Writable data; only for tensors made by Allocate or Copy (null otherwise).
  void* mutable_data() const { return writable_ ? const_cast<void*>(data_) : nullptr; }

  // String elements (empty for numeric tensors).
  const std::vector<std::string>& strings() const;
  // Writable strings of a tensor made by Allocate/FromStrings/Copy (null otherwise).
  std::vector<std::string>* mutable_strings() const { return writable_ ? strings_.get() : nullptr; }

  // Whatever keeps the storage alive.
  const std::shared_ptr<const void>& owner() const { return owner_; }
  bool is_view() const { return !writable_; }

  // A deep copy that owns its storage (an error only when memory runs out).
  StatusOr<Tensor> Copy() const;
  // "float32[2,3]".
  std::string Describe() const;

 private:
  static StatusOr<Tensor> AllocateImpl(DType dtype, Shape shape, bool zero);

  DType dtype_ = DType::kFloat32;
  Shape shape_ = {0};
  int64_t num_elements_ = 0;
  size_t byte_size_ = 0;
  const void* data_ = nullptr;
  bool writable_ = true;
  std::shared_ptr<const void> owner_;
  std::shared_ptr<std::vector<std::string>> strings_;
};

// A tensor with its signature key, as fed to and returned by Model::Run.
struct NamedTensor {
  std::string name;
  Tensor tensor;
};

// The tensor named `name` in `tensors`, or nullptr.
const Tensor* FindTensor(const std::vector<NamedTensor>& tensors, const std::string& name);

template <typename T>
StatusOr<Tensor> Tensor::FromVector(DType dtype, Shape shape, const std::vector<T>& values) {
  if (dtype == DType::kString || sizeof(T) != DTypeSize(dtype)) {
    return InvalidArgument(std::string("FromVector: element size does not match ") + DTypeName(dtype));
  }
  auto tensor = Allocate(dtype, std::move(shape));
  if (!tensor.ok()) return tensor;
  if (static_cast<size_t>(tensor->num_elements()) != values.size()) {
    return InvalidArgument("FromVector: " + std::to_string(values.size()) + " values for shape " +
                           ShapeToString(tensor->shape()));
  }
  if (!values.empty()) std::memcpy(tensor->mutable_data(), values.data(), tensor->byte_size());
  return tensor;
}

}  // namespace servekit

#endif  // SERVEKIT_CC_TENSOR_H_
