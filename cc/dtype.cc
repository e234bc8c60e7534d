#include "cc/dtype.h"

#include <cmath>
#include <cstring>

namespace servekit {

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kInt8: return "int8";
    case DType::kInt16: return "int16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kUInt8: return "uint8";
    case DType::kUInt16: return "uint16";
    case DType::kUInt32: return "uint32";
    case DType::kUInt64: return "uint64";
    case DType::kBool: return "bool";
    case DType::kString: return "string";
  }
  return "invalid";
}

std::optional<DType> DTypeFromName(std::string_view name) {
  for (DType d : kAllDTypes) {
    if (name == DTypeName(d)) return d;
  }
  return std::nullopt;
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kBool:
    case DType::kInt8:
    case DType::kUInt8: return 1;
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt16:
    case DType::kUInt16: return 2;
    case DType::kFloat32:
    case DType::kInt32:
    case DType::kUInt32: return 4;
    case DType::kFloat64:
    case DType::kInt64:
    case DType::kUInt64: return 8;
    case DType::kString: return 0;
  }
  return 0;
}

bool IsFloating(DType dtype) {
  return dtype == DType::kFloat16 || dtype == DType::kBFloat16 || dtype == DType::kFloat32 ||
         dtype == DType::kFloat64;
}

namespace {

// TF_DataType numbers, from tensorflow/c/tf_datatype.h (stable since TF 1.0).
struct TfEntry { int tf; DType dtype; };
constexpr TfEntry kTfTypes[] = {
    {19, DType::kFloat16}, {14, DType::kBFloat16}, {1, DType::kFloat32}, {2, DType::kFloat64},
    {6, DType::kInt8},     {5, DType::kInt16},     {3, DType::kInt32},   {9, DType::kInt64},
    {4, DType::kUInt8},    {17, DType::kUInt16},   {22, DType::kUInt32}, {23, DType::kUInt64},
    {10, DType::kBool},    {7, DType::kString},
};

// ONNXTensorElementDataType numbers, from onnxruntime_c_api.h (= onnx.TensorProto.DataType).
struct OnnxEntry { int onnx; DType dtype; };
constexpr OnnxEntry kOnnxTypes[] = {
    {10, DType::kFloat16}, {16, DType::kBFloat16}, {1, DType::kFloat32}, {11, DType::kFloat64},
    {3, DType::kInt8},     {5, DType::kInt16},     {6, DType::kInt32},   {7, DType::kInt64},
    {2, DType::kUInt8},    {4, DType::kUInt16},    {12, DType::kUInt32}, {13, DType::kUInt64},
    {9, DType::kBool},     {8, DType::kString},
};

}  // namespace

std::optional<DType> DTypeFromTensorFlow(int tf_datatype) {
  for (const auto& e : kTfTypes) {
    if (e.tf == tf_datatype) return e.dtype;
  }
  return std::nullopt;
}

int ToTensorFlow(DType dtype) {
  for (const auto& e : kTfTypes) {
    if (e.dtype == dtype) return e.tf;
  }
  return 0;
}

std::string TensorFlowTypeName(int tf_datatype) {
  if (auto d = DTypeFromTensorFlow(tf_datatype)) return DTypeName(*d);
  switch (tf_datatype) {
    case 0: return "invalid (DT_INVALID)";
    case 8: return "complex64";
    case 18: return "complex128";
    case 11: return "qint8";
    case 12: return "quint8";
    case 13: return "qint32";
    case 15: return "qint16";
    case 16: return "quint16";
    case 20: return "resource";
    case 21: return "variant";
  }
  return "TF_DataType " + std::to_string(tf_datatype);
}

std::optional<DType> DTypeFromOnnx(int onnx_type) {
  for (const auto& e : kOnnxTypes) {
    if (e.onnx == onnx_type) return e.dtype;
  }
  return std::nullopt;
}

int ToOnnx(DType dtype) {
  for (const auto& e : kOnnxTypes) {
    if (e.dtype == dtype) return e.onnx;
  }
  return 0;
}

std::string OnnxTypeName(int onnx_type) {
  if (auto d = DTypeFromOnnx(onnx_type)) return DTypeName(*d);
  switch (onnx_type) {
    case 0: return "undefined";
    case 14: return "complex64";
    case 15: return "complex128";
    case 17: return "float8e4m3fn";
    case 18: return "float8e4m3fnuz";
    case 19: return "float8e5m2";
    case 20: return "float8e5m2fnuz";
    case 21: return "uint4";
    case 22: return "int4";
  }
  return "ONNX element type " + std::to_string(onnx_type);
}

double HalfToDouble(uint16_t bits) {
  const int sign = (bits >> 15) & 1;
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  double value;
  if (exponent == 0) {
    value = std::ldexp(static_cast<double>(mantissa), -24);
  } else if (exponent == 31) {
    value = mantissa == 0 ? INFINITY : NAN;
  } else {
    value = std::ldexp(static_cast<double>(mantissa | 0x400), exponent - 25);
  }
  return sign ? -value : value;
}

double BFloat16ToDouble(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof(f));
  return f;
}

uint16_t DoubleToBFloat16(double value) {
  const float f = static_cast<float>(value);
  uint32_t wide;
  std::memcpy(&wide, &f, sizeof(f));
  if (std::isnan(f)) return 0x7fc0;
  const uint32_t rounding = 0x7fff + ((wide >> 16) & 1);
  return static_cast<uint16_t>((wide + rounding) >> 16);
}

uint16_t DoubleToHalf(double value) {
  const uint16_t sign = std::signbit(value) ? 0x8000 : 0;
  double a = std::fabs(value);
  if (std::isnan(value)) return 0x7e00;
  if (a >= 65520.0) return sign | 0x7c00;  // rounds to infinity
  if (a < std::ldexp(1.0, -25)) return sign;  // rounds to zero
  int exponent;
  std::frexp(a, &exponent);  // a = m * 2^exponent, m in [0.5, 1)
  int e = exponent - 1;      // a = 1.f * 2^e
  if (e < -14) {             // subnormal: units of 2^-24
    const double units = std::nearbyint(std::ldexp(a, 24));
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(units));
  }
  double units = std::nearbyint(std::ldexp(a, 10 - e));  // 1024..2048
  if (units >= 2048.0) {
    units /= 2;
    ++e;
  }
  if (e > 15) return sign | 0x7c00;
  return static_cast<uint16_t>(sign | ((e + 15) << 10) | (static_cast<uint32_t>(units) & 0x3ff));
}

namespace {
template <typename T>
double Load(const void* data, int64_t index) {
  T v;
  std::memcpy(&v, static_cast<const char*>(data) + index * sizeof(T), sizeof(T));
  return static_cast<double>(v);
}
}  // namespace

double ElementAsDouble(DType dtype, const void* data, int64_t index) {
  switch (dtype) {
    case DType::kFloat16: return HalfToDouble(static_cast<uint16_t>(Load<uint16_t>(data, index)));
    case DType::kBFloat16: return BFloat16ToDouble(static_cast<uint16_t>(Load<uint16_t>(data, index)));
    case DType::kFloat32: return Load<float>(data, index);
    case DType::kFloat64: return Load<double>(data, index);
    case DType::kInt8: return Load<int8_t>(data, index);
    case DType::kInt16: return Load<int16_t>(data, index);
    case DType::kInt32: return Load<int32_t>(data, index);
    case DType::kInt64: return Load<int64_t>(data, index);
    case DType::kUInt8: return Load<uint8_t>(data, index);
    case DType::kUInt16: return Load<uint16_t>(data, index);
    case DType::kUInt32: return Load<uint32_t>(data, index);
    case DType::kUInt64: return Load<uint64_t>(data, index);
    case DType::kBool: return Load<uint8_t>(data, index) != 0 ? 1.0 : 0.0;
    case DType::kString: return 0.0;
  }
  return 0.0;
}

}  // namespace servekit
