// DType: the element types servekit's signatures, tensors and .npy files use.
//
// Names are the manifest's (docs/manifest.md). Conversions to TensorFlow's
// TF_DataType and ONNX Runtime's ONNXTensorElementDataType go through the enums'
// numeric values, so this library needs neither runtime's headers;
// tf_saved_model.cc and onnx_model.cc static_assert that the numbers agree.
#ifndef SERVEKIT_CC_DTYPE_H_
#define SERVEKIT_CC_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace servekit {

enum class DType : uint8_t {
  kFloat16, kBFloat16, kFloat32, kFloat64,
  kInt8, kInt16, kInt32, kInt64,
  kUInt8, kUInt16, kUInt32, kUInt64,
  kBool, kString,
};

inline constexpr DType kAllDTypes[] = {
    DType::kFloat16, DType::kBFloat16, DType::kFloat32, DType::kFloat64,
    DType::kInt8,    DType::kInt16,    DType::kInt32,   DType::kInt64,
    DType::kUInt8,   DType::kUInt16,   DType::kUInt32,  DType::kUInt64,
    DType::kBool,    DType::kString,
};

// "float32", "int64", "string", ...
const char* DTypeName(DType dtype);
std::optional<DType> DTypeFromName(std::string_view name);

// Bytes per element; 0 for string (strings are stored out of line).
size_t DTypeSize(DType dtype);
bool IsFloating(DType dtype);  // float16, bfloat16, float32, float64

// TF_DataType numbers (TF_FLOAT = 1, ...). nullopt for types servekit does not handle
// (complex, quantized, resource, variant).
std::optional<DType> DTypeFromTensorFlow(int tf_datatype);
int ToTensorFlow(DType dtype);
// A readable name for any TF_DataType number, for error messages ("complex64").
std::string TensorFlowTypeName(int tf_datatype);

// ONNXTensorElementDataType numbers (FLOAT = 1, ...). nullopt for unsupported ones.
std::optional<DType> DTypeFromOnnx(int onnx_type);
int ToOnnx(DType dtype);
std::string OnnxTypeName(int onnx_type);

// IEEE half and bfloat16 bit patterns to and from double (round to nearest even).
double HalfToDouble(uint16_t bits);
double BFloat16ToDouble(uint16_t bits);
uint16_t DoubleToHalf(double value);
uint16_t DoubleToBFloat16(double value);

// Element `index` of a numeric array of `dtype` at `data`, as a double. Not for strings.
double ElementAsDouble(DType dtype, const void* data, int64_t index);

}  // namespace servekit

#endif  // SERVEKIT_CC_DTYPE_H_
