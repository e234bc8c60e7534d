#include "cc/litert_model.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>

#include "cc/file_util.h"
#include "cc/litert_c_api.h"

namespace servekit {
namespace {

// ---- RAII owners of LiteRT's C handles ------------------------------------------

template <typename T, void (*Destroy)(T)>
struct HandleDeleter {
  void operator()(T handle) const {
    if (handle != nullptr) Destroy(handle);
  }
};
template <typename T, void (*Destroy)(T)>
using Owned = std::unique_ptr<std::remove_pointer_t<T>, HandleDeleter<T, Destroy>>;

using EnvironmentOwner = Owned<LiteRtEnvironment, LiteRtDestroyEnvironment>;
using ModelOwner = Owned<::LiteRtModel, LiteRtDestroyModel>;
using OptionsOwner = Owned<LiteRtOptions, LiteRtDestroyOptions>;
using CompiledModelOwner = Owned<LiteRtCompiledModel, LiteRtDestroyCompiledModel>;
using TensorBufferOwner = Owned<LiteRtTensorBuffer, LiteRtDestroyTensorBuffer>;

// 64-byte aligned host memory (LiteRT's host-buffer alignment), freed with free().
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using AlignedBytes = std::unique_ptr<void, FreeDeleter>;

AlignedBytes AllocateAligned(size_t bytes) {
  constexpr size_t kAlign = SERVEKIT_LITERT_HOST_MEMORY_ALIGNMENT;
  const size_t rounded = (std::max<size_t>(bytes, 1) + kAlign - 1) / kAlign * kAlign;
  return AlignedBytes(std::aligned_alloc(kAlign, rounded));
}

const char* StatusName(LiteRtStatus status) {
  switch (status) {
    case 1: return "kLiteRtStatusErrorInvalidArgument";
    case 2: return "kLiteRtStatusErrorMemoryAllocationFailure";
    case 3: return "kLiteRtStatusErrorRuntimeFailure";
    case 4: return "kLiteRtStatusErrorMissingInputTensor";
    case 5: return "kLiteRtStatusErrorUnsupported";
    case 6: return "kLiteRtStatusErrorNotFound";
    case 9: return "kLiteRtStatusErrorUnknown";
    case 500: return "kLiteRtStatusErrorFileIO";
    case 501: return "kLiteRtStatusErrorInvalidFlatbuffer";
    case 504: return "kLiteRtStatusErrorCompilation";
    case 1000: return "kLiteRtStatusErrorIndexOOB";
    default: return nullptr;
  }
}

// "<what>: LiteRT <call> returned kLiteRtStatusError... (n)".
Status Failed(StatusCode code, const std::string& what, const char* call, LiteRtStatus status) {
  const char* name = StatusName(status);
  return Status(code, what + ": LiteRT " + call + " returned " + (name != nullptr ? std::string(name) + " " : "") +
                          "(" + std::to_string(status) + ")");
}

// The process-wide environment. Never destroyed: compiled models may outlive static
// destruction order (e.g. in the Python module).
StatusOr<LiteRtEnvironment> SharedEnvironment() {
  static LiteRtStatus status = kLiteRtStatusOk;
  static LiteRtEnvironment environment = [] {
    LiteRtEnvironment env = nullptr;
    status = LiteRtCreateEnvironment(0, nullptr, &env);
    return env;
  }();
  if (environment == nullptr) return Failed(StatusCode::kInternal, "LiteRT", "LiteRtCreateEnvironment", status);
  return environment;
}

std::optional<DType> DTypeFromLiteRt(int type) {
  switch (type) {
    case kLiteRtElementTypeFloat16: return DType::kFloat16;
    case kLiteRtElementTypeBFloat16: return DType::kBFloat16;
    case kLiteRtElementTypeFloat32: return DType::kFloat32;
    case kLiteRtElementTypeFloat64: return DType::kFloat64;
    case kLiteRtElementTypeInt8: return DType::kInt8;
    case kLiteRtElementTypeInt16: return DType::kInt16;
    case kLiteRtElementTypeInt32: return DType::kInt32;
    case kLiteRtElementTypeInt64: return DType::kInt64;
    case kLiteRtElementTypeUInt8: return DType::kUInt8;
    case kLiteRtElementTypeUInt16: return DType::kUInt16;
    case kLiteRtElementTypeUInt32: return DType::kUInt32;
    case kLiteRtElementTypeUInt64: return DType::kUInt64;
    case kLiteRtElementTypeBool: return DType::kBool;
    default: return std::nullopt;  // strings, complex, resources, variants, int4
  }
}

struct TensorInfo {
  TensorSpec spec;
  int element_type = 0;
};

StatusOr<TensorInfo> ReadTensor(LiteRtTensor tensor, const char* name, const std::string& where) {
  TensorInfo info;
  info.spec.name = name != nullptr ? name : "";
  const std::string named = where + " '" + info.spec.name + "'";
  int type_id = -1;
  LiteRtStatus st = LiteRtGetTensorTypeId(tensor, &type_id);
  if (st != kLiteRtStatusOk) return Failed(StatusCode::kDataLoss, named, "LiteRtGetTensorTypeId", st);
  if (type_id != kLiteRtRankedTensorType) return Unimplemented(named + " has an unknown rank");
  LiteRtRankedTensorType type{};
  st = LiteRtGetRankedTensorType(tensor, &type);
  if (st != kLiteRtStatusOk) return Failed(StatusCode::kDataLoss, named, "LiteRtGetRankedTensorType", st);
  const auto dtype = DTypeFromLiteRt(type.element_type);
  if (!dtype) {
    return Unimplemented(named + " has LiteRT element type " + std::to_string(type.element_type) +
                         ", which servekit's LiteRT runner does not support");
  }
  info.spec.dtype = *dtype;
  info.element_type = type.element_type;
  for (unsigned i = 0; i < type.layout.rank; ++i) {
    const int32_t d = type.layout.dimensions[i];
    info.spec.dims.push_back(d >= 0 ? Dim::Static(d) : Dim::Dynamic());
  }
  return info;
}

}  // namespace

Status CheckLiteRtBytes(std::string_view bytes, const std::string& what) {
  if (bytes.empty()) return DataLoss(what + " is empty, not a LiteRT model");
  if (bytes.size() < 8 || bytes.substr(4, 4) != "TFL3") {
    return DataLoss(what + " is not a LiteRT model: no TFL3 FlatBuffer identifier");
  }
  return Status::Ok();
}

struct LiteRtModel::Runtime {
  ModelOwner model;
  CompiledModelOwner compiled;
  std::vector<int> input_types;   // LiteRtElementType per input
  std::vector<int> output_types;  // LiteRtElementType per output
  // Per output dim: its static size, or -1 for the first input's leading dim (the batch).
  std::vector<std::vector<int64_t>> output_dims;
  std::mutex mutex;  // one call at a time on the compiled model
  std::vector<Shape> resized;  // each input's shape as last given to LiteRT (guarded by mutex)
};

LiteRtModel::LiteRtModel(std::string path, std::vector<Signature> signatures, std::unique_ptr<Runtime> runtime)
    : Model(std::move(path), std::move(signatures)), runtime_(std::move(runtime)) {}

LiteRtModel::~LiteRtModel() = default;

StatusOr<std::unique_ptr<LiteRtModel>> LiteRtModel::Load(const std::string& path, const LoadOptions& options) {
  SERVEKIT_RETURN_IF_ERROR(CheckLoadOptions(options));
  if (IsDirectory(path)) return InvalidArgument(path + " is a directory, not a LiteRT (.tflite) file");
  if (!IsRegularFile(path)) return NotFound("no LiteRT model at " + path + ": no such file");
  SERVEKIT_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  SERVEKIT_RETURN_IF_ERROR(CheckLiteRtBytes(bytes, path));
  if (options.device == Device::kGpu) {
    return FailedPrecondition("device 'gpu' requested for " + path +
                              ", but servekit runs LiteRT models on the CPU only");
  }
  SERVEKIT_ASSIGN_OR_RETURN(LiteRtEnvironment environment, SharedEnvironment());

  auto runtime = std::make_unique<Runtime>();
  ::LiteRtModel model = nullptr;
  LiteRtStatus st = LiteRtCreateModelFromFile(environment, path.c_str(), &model);
  runtime->model.reset(model);
  if (st != kLiteRtStatusOk) return Failed(StatusCode::kDataLoss, "LiteRT could not read " + path, "LiteRtCreateModelFromFile", st);

  // The serving_default signature.
  LiteRtParamIndex count = 0;
  st = LiteRtGetNumModelSignatures(model, &count);
  if (st != kLiteRtStatusOk) return Failed(StatusCode::kDataLoss, path, "LiteRtGetNumModelSignatures", st);
  LiteRtSignature found = nullptr;
  LiteRtParamIndex signature_index = 0;
  std::string keys;
  for (LiteRtParamIndex i = 0; i < count; ++i) {
    LiteRtSignature signature = nullptr;
    const char* key = nullptr;
    if (LiteRtGetModelSignature(model, i, &signature) != kLiteRtStatusOk ||
        LiteRtGetSignatureKey(signature, &key) != kLiteRtStatusOk || key == nullptr) {
      return DataLoss(path + ": LiteRT could not read signature " + std::to_string(i));
    }
    keys += (keys.empty() ? "'" : ", '") + std::string(key) + "'";
    if (std::string(key) == kLiteRtEndpoint) {
      found = signature;
      signature_index = i;
    }
  }
  if (found == nullptr) {
    return NotFound(path + " has no '" + kLiteRtEndpoint + "' signature (it has: " +
                    (keys.empty() ? "no signatures" : keys) + ")");
  }
  if (signature_index != 0) {
    return Unimplemented(path + ": servekit runs signature 0; '" + kLiteRtEndpoint + "' is signature " +
                         std::to_string(signature_index));
  }

  Signature signature;
  signature.name = kLiteRtEndpoint;
  LiteRtParamIndex n = 0;
  if ((st = LiteRtGetNumSignatureInputs(found, &n)) != kLiteRtStatusOk) {
    return Failed(StatusCode::kDataLoss, path, "LiteRtGetNumSignatureInputs", st);
  }
  for (LiteRtParamIndex i = 0; i < n; ++i) {
    const char* name = nullptr;
    LiteRtTensor tensor = nullptr;
    if ((st = LiteRtGetSignatureInputName(found, i, &name)) != kLiteRtStatusOk ||
        (st = LiteRtGetSignatureInputTensorByIndex(found, i, &tensor)) != kLiteRtStatusOk) {
      return Failed(StatusCode::kDataLoss, path + " input " + std::to_string(i), "signature input", st);
    }
    SERVEKIT_ASSIGN_OR_RETURN(TensorInfo info, ReadTensor(tensor, name, path + ": LiteRT input"));
    runtime->input_types.push_back(info.element_type);
    signature.inputs.push_back(std::move(info.spec));
  }
  if ((st = LiteRtGetNumSignatureOutputs(found, &n)) != kLiteRtStatusOk) {
    return Failed(StatusCode::kDataLoss, path, "LiteRtGetNumSignatureOutputs", st);
  }
  const bool batch_input = !signature.inputs.empty() && !signature.inputs[0].dims.empty();
  for (LiteRtParamIndex i = 0; i < n; ++i) {
    const char* name = nullptr;
    LiteRtTensor tensor = nullptr;
    if ((st = LiteRtGetSignatureOutputName(found, i, &name)) != kLiteRtStatusOk ||
        (st = LiteRtGetSignatureOutputTensorByIndex(found, i, &tensor)) != kLiteRtStatusOk) {
      return Failed(StatusCode::kDataLoss, path + " output " + std::to_string(i), "signature output", st);
    }
    SERVEKIT_ASSIGN_OR_RETURN(TensorInfo info, ReadTensor(tensor, name, path + ": LiteRT output"));
    std::vector<int64_t> dims;
    for (size_t k = 0; k < info.spec.dims.size(); ++k) {
      const Dim& d = info.spec.dims[k];
      if (d.is_static()) {
        dims.push_back(d.size);
      } else if (k == 0 && batch_input && !signature.inputs[0].dims[0].is_static()) {
        dims.push_back(-1);
      } else {
        return Unimplemented(path + ": LiteRT output '" + info.spec.name + "' (" + SpecToString(info.spec) +
                             ") has a dynamic dim other than the batch; servekit sizes LiteRT outputs from the "
                             "signature");
      }
    }
    runtime->output_dims.push_back(std::move(dims));
    runtime->output_types.push_back(info.element_type);
    signature.outputs.push_back(std::move(info.spec));
  }
  for (const auto& in : signature.inputs) {
    Shape shape;
    for (const auto& d : in.dims) shape.push_back(d.size);  // -1 where dynamic: forces the first resize
    runtime->resized.push_back(std::move(shape));
  }

  // Compiled for the CPU (XNNPACK).
  LiteRtOptions raw_options = nullptr;
  if ((st = LiteRtCreateOptions(&raw_options)) != kLiteRtStatusOk) {
    return Failed(StatusCode::kInternal, path, "LiteRtCreateOptions", st);
  }
  OptionsOwner compile_options(raw_options);
  if ((st = LiteRtSetOptionsHardwareAccelerators(raw_options, kLiteRtHwAcceleratorCpu)) != kLiteRtStatusOk) {
    return Failed(StatusCode::kInternal, path, "LiteRtSetOptionsHardwareAccelerators", st);
  }
  LiteRtCompiledModel compiled = nullptr;
  st = LiteRtCreateCompiledModel(environment, model, raw_options, &compiled);
  runtime->compiled.reset(compiled);
  if (st != kLiteRtStatusOk) {
    return Failed(StatusCode::kInternal, "LiteRT could not compile " + path, "LiteRtCreateCompiledModel", st);
  }
  std::vector<Signature> signatures;
  signatures.push_back(std::move(signature));
  return std::unique_ptr<LiteRtModel>(new LiteRtModel(path, std::move(signatures), std::move(runtime)));
}

namespace {

LiteRtRankedTensorType RankedType(int element_type, const Shape& shape) {
  LiteRtRankedTensorType type{};
  type.element_type = element_type;
  type.layout.rank = static_cast<unsigned>(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) type.layout.dimensions[i] = static_cast<int32_t>(shape[i]);
  return type;
}

}  // namespace

Status LiteRtModel::RunChecked(size_t endpoint_index, const std::vector<const Tensor*>& inputs,
                               std::vector<NamedTensor>* outputs) const {
  const Signature& signature = signatures()[endpoint_index];
  Runtime& rt = *runtime_;
  const std::string where = path() + " endpoint '" + signature.name + "'";
  for (const Tensor* t : inputs) {
    if (t->rank() > SERVEKIT_LITERT_TENSOR_MAX_RANK) return InvalidArgument(where + ": rank over 8");
    for (int64_t d : t->shape()) {
      if (d > INT32_MAX) return InvalidArgument(where + ": a dim over 2^31 - 1");
    }
  }
  std::vector<TensorBufferOwner> buffers;  // inputs, then outputs
  std::vector<LiteRtTensorBuffer> in_handles, out_handles;
  std::vector<AlignedBytes> scratch;  // aligned copies of misaligned inputs

  std::lock_guard<std::mutex> lock(rt.mutex);
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = *inputs[i];
    const std::string tensor = where + " input '" + signature.inputs[i].name + "'";
    if (t.shape() != rt.resized[i]) {
      const std::vector<int> dims(t.shape().begin(), t.shape().end());
      LiteRtStatus st = LiteRtCompiledModelResizeInputTensor(rt.compiled.get(), 0, i, dims.data(), dims.size());
      if (st != kLiteRtStatusOk) {
        return Failed(StatusCode::kInvalidArgument, tensor + " to " + t.Describe(),
                      "LiteRtCompiledModelResizeInputTensor", st);
      }
      rt.resized[i] = t.shape();
    }
    void* data = const_cast<void*>(t.data());
    if (t.byte_size() == 0 || reinterpret_cast<uintptr_t>(data) % SERVEKIT_LITERT_HOST_MEMORY_ALIGNMENT != 0) {
      scratch.push_back(AllocateAligned(t.byte_size()));
      if (scratch.back() == nullptr) return Internal(tensor + ": out of memory");
      if (t.byte_size() > 0) std::memcpy(scratch.back().get(), t.data(), t.byte_size());
      data = scratch.back().get();
    }
    const LiteRtRankedTensorType type = RankedType(rt.input_types[i], t.shape());
    LiteRtTensorBuffer buffer = nullptr;
    LiteRtStatus st = LiteRtCreateTensorBufferFromHostMemory(&type, data, t.byte_size(), nullptr, &buffer);
    buffers.emplace_back(buffer);
    if (st != kLiteRtStatusOk) {
      return Failed(StatusCode::kInternal, tensor, "LiteRtCreateTensorBufferFromHostMemory", st);
    }
    in_handles.push_back(buffer);
  }
  const int64_t batch = inputs.empty() || inputs[0]->rank() == 0 ? 0 : inputs[0]->shape()[0];
  std::vector<Tensor> results;
  for (size_t i = 0; i < signature.outputs.size(); ++i) {
    const TensorSpec& spec = signature.outputs[i];
    const std::string tensor = where + " output '" + spec.name + "'";
    Shape shape;
    for (int64_t d : rt.output_dims[i]) shape.push_back(d >= 0 ? d : batch);
    SERVEKIT_ASSIGN_OR_RETURN(int64_t elements, NumElements(shape));
    const size_t bytes = static_cast<size_t>(elements) * DTypeSize(spec.dtype);
    std::shared_ptr<void> memory(AllocateAligned(bytes).release(), FreeDeleter());
    if (memory == nullptr) return Internal(tensor + ": out of memory");
    SERVEKIT_ASSIGN_OR_RETURN(Tensor out, Tensor::View(spec.dtype, shape, memory.get(), bytes, memory));
    const LiteRtRankedTensorType type = RankedType(rt.output_types[i], shape);
    LiteRtTensorBuffer buffer = nullptr;
    LiteRtStatus st =
        LiteRtCreateTensorBufferFromHostMemory(&type, memory.get(), std::max<size_t>(bytes, 1), nullptr, &buffer);
    buffers.emplace_back(buffer);
    if (st != kLiteRtStatusOk) {
      return Failed(StatusCode::kInternal, tensor, "LiteRtCreateTensorBufferFromHostMemory", st);
    }
    out_handles.push_back(buffer);
    results.push_back(std::move(out));
  }
  LiteRtStatus st = LiteRtRunCompiledModel(rt.compiled.get(), 0, in_handles.size(), in_handles.data(),
                                           out_handles.size(), out_handles.data());
  if (st != kLiteRtStatusOk) return Failed(StatusCode::kInternal, where, "LiteRtRunCompiledModel", st);
  for (size_t i = 0; i < results.size(); ++i) {
    outputs->push_back(NamedTensor{signature.outputs[i].name, std::move(results[i])});
  }
  return Status::Ok();
}

}  // namespace servekit
