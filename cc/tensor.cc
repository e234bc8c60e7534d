#include "cc/tensor.h"

#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>

namespace servekit {
namespace {

// Owned numeric storage: 64-byte aligned, as TensorFlow and vector units like it.
constexpr size_t kAlignment = 64;

// The shared_ptr control block of an owned buffer lives in the buffer's own
// allocation, in front of the bytes: one malloc and one free per tensor (this is
// on the per-call path of every runner's outputs). The allocator hands the
// control block that front part and frees the whole block when the control block
// goes, after the (empty) deleter ran.
constexpr size_t kControlBlockRoom = 64;

template <typename T>
struct InBlockAllocator {
  using value_type = T;
  void* block;
  explicit InBlockAllocator(void* b) : block(b) {}
  template <typename U>
  InBlockAllocator(const InBlockAllocator<U>& other) : block(other.block) {}  // NOLINT: allocator rebind
  T* allocate(size_t n) {
    if (n * sizeof(T) > kControlBlockRoom) throw std::bad_alloc();  // cannot happen with libstdc++
    return static_cast<T*>(block);
  }
  void deallocate(T*, size_t) { std::free(block); }
  template <typename U>
  bool operator==(const InBlockAllocator<U>& other) const { return block == other.block; }
  template <typename U>
  bool operator!=(const InBlockAllocator<U>& other) const { return block != other.block; }
};

std::shared_ptr<const void> AllocateAligned(size_t bytes, bool zero, void** data) {
  // malloc and align by hand: glibc's aligned_alloc is several times slower.
  void* raw = std::malloc(kControlBlockRoom + bytes + kAlignment);
  if (raw == nullptr) return nullptr;
  const auto address = reinterpret_cast<uintptr_t>(raw) + kControlBlockRoom;
  *data = reinterpret_cast<void*>((address + kAlignment - 1) & ~uintptr_t{kAlignment - 1});
  if (zero) std::memset(*data, 0, bytes);
  return std::shared_ptr<const void>(*data, [](const void*) {}, InBlockAllocator<char>(raw));
}

const std::vector<std::string>& EmptyStrings() {
  static const auto* empty = new std::vector<std::string>();
  return *empty;
}

}  // namespace

StatusOr<int64_t> NumElements(const Shape& shape) {
  constexpr int64_t kMax = int64_t{1} << 50;  // well beyond any host memory
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return InvalidArgument("shape " + ShapeToString(shape) + " has a negative dimension");
    if (d != 0 && n > kMax / d) {
      return InvalidArgument("shape " + ShapeToString(shape) + " has too many elements");
    }
    n *= d;
  }
  return n;
}

std::string ShapeToString(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

StatusOr<Tensor> Tensor::Allocate(DType dtype, Shape shape) { return AllocateImpl(dtype, std::move(shape), true); }

StatusOr<Tensor> Tensor::AllocateUninitialized(DType dtype, Shape shape) {
  return AllocateImpl(dtype, std::move(shape), false);
}

StatusOr<Tensor> Tensor::AllocateImpl(DType dtype, Shape shape, bool zero) {
  SERVEKIT_ASSIGN_OR_RETURN(int64_t n, NumElements(shape));
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.num_elements_ = n;
  t.writable_ = true;
  if (dtype == DType::kString) {
    t.strings_ = std::make_shared<std::vector<std::string>>(static_cast<size_t>(n));
    t.owner_ = t.strings_;
    return t;
  }
  const size_t item = DTypeSize(dtype);
  if (static_cast<uint64_t>(n) > std::numeric_limits<size_t>::max() / 16 / item) {
    return InvalidArgument("tensor too large");
  }
  t.byte_size_ = static_cast<size_t>(n) * item;
  void* data = nullptr;
  t.owner_ = AllocateAligned(t.byte_size_, zero, &data);
  if (t.owner_ == nullptr) {
    return InvalidArgument("cannot allocate " + std::to_string(t.byte_size_) + " bytes for a " +
                           std::string(DTypeName(dtype)) + ShapeToString(t.shape_) + " tensor");
  }
  t.data_ = data;
  return t;
}

StatusOr<Tensor> Tensor::View(DType dtype, Shape shape, const void* data, size_t nbytes,
                              std::shared_ptr<const void> owner) {
  if (dtype == DType::kString) return InvalidArgument("a string tensor cannot be a byte view");
  SERVEKIT_ASSIGN_OR_RETURN(int64_t n, NumElements(shape));
  const size_t expected = static_cast<size_t>(n) * DTypeSize(dtype);
  if (nbytes != expected) {
    return InvalidArgument(std::string(DTypeName(dtype)) + ShapeToString(shape) + " needs " +
                           std::to_string(expected) + " bytes, got " + std::to_string(nbytes));
  }
  if (data == nullptr && nbytes != 0) return InvalidArgument("null data for a non-empty tensor");
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.num_elements_ = n;
  t.byte_size_ = nbytes;
  t.data_ = data;
  t.writable_ = false;
  t.owner_ = std::move(owner);
  return t;
}

StatusOr<Tensor> Tensor::FromStrings(Shape shape, std::vector<std::string> values) {
  SERVEKIT_ASSIGN_OR_RETURN(int64_t n, NumElements(shape));
  if (static_cast<uint64_t>(n) != values.size()) {
    return InvalidArgument("string" + ShapeToString(shape) + " needs " + std::to_string(n) +
                           " values, got " + std::to_string(values.size()));
  }
  Tensor t;
  t.dtype_ = DType::kString;
  t.shape_ = std::move(shape);
  t.num_elements_ = n;
  t.writable_ = true;
  t.strings_ = std::make_shared<std::vector<std::string>>(std::move(values));
  t.owner_ = t.strings_;
  return t;
}

const std::vector<std::string>& Tensor::strings() const {
  return strings_ ? *strings_ : EmptyStrings();
}

StatusOr<Tensor> Tensor::Copy() const {
  if (is_string()) return FromStrings(shape_, strings());
  SERVEKIT_ASSIGN_OR_RETURN(Tensor t, Allocate(dtype_, shape_));
  if (byte_size_ != 0) std::memcpy(t.mutable_data(), data_, byte_size_);
  return t;
}

std::string Tensor::Describe() const { return std::string(DTypeName(dtype_)) + ShapeToString(shape_); }

const Tensor* FindTensor(const std::vector<NamedTensor>& tensors, const std::string& name) {
  for (const auto& t : tensors) {
    if (t.name == name) return &t.tensor;
  }
  return nullptr;
}

}  // namespace servekit
