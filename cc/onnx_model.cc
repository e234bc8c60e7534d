#include "cc/onnx_model.h"

#include <algorithm>
#include <atomic>

#include "cc/file_util.h"
#include "cc/protowire.h"
#include "onnxruntime_cxx_api.h"

namespace servekit {

// dtype.h converts by number; make sure the numbers are ONNX Runtime's.
static_assert(ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT == 1 && ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 == 2 &&
              ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8 == 3 && ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16 == 4 &&
              ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16 == 5 && ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 == 6 &&
              ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 == 7 && ONNX_TENSOR_ELEMENT_DATA_TYPE_STRING == 8 &&
              ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL == 9 && ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 == 10 &&
              ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE == 11 && ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32 == 12 &&
              ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64 == 13 && ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 == 16,
              "ONNXTensorElementDataType numbers changed; update cc/dtype.cc");

namespace {

// The process-wide environment. Never destroyed: sessions may outlive static
// destruction order (e.g. in the Python module).
Ort::Env& SharedEnv() {
  static Ort::Env* env = new Ort::Env(ORT_LOGGING_LEVEL_ERROR, "servekit");
  return *env;
}

const char* OnnxTypeKind(ONNXType type) {
  switch (type) {
    case ONNX_TYPE_SEQUENCE: return "a sequence";
    case ONNX_TYPE_MAP: return "a map";
    case ONNX_TYPE_OPTIONAL: return "an optional";
    case ONNX_TYPE_SPARSETENSOR: return "a sparse tensor";
    default: return "not a tensor";
  }
}

StatusOr<TensorSpec> SpecFromTypeInfo(const std::string& name, const Ort::TypeInfo& info, const char* role) {
  const std::string where = "ONNX graph " + std::string(role) + " '" + name + "'";
  if (info.GetONNXType() != ONNX_TYPE_TENSOR) {
    return Unimplemented(where + " is " + OnnxTypeKind(info.GetONNXType()) + "; servekit supports tensors only");
  }
  auto tensor_info = info.GetTensorTypeAndShapeInfo();
  const int element_type = static_cast<int>(tensor_info.GetElementType());
  const auto dtype = DTypeFromOnnx(element_type);
  if (!dtype) {
    return Unimplemented(where + " has element type " + OnnxTypeName(element_type) +
                         ", which servekit does not support");
  }
  TensorSpec spec;
  spec.name = name;
  spec.dtype = *dtype;
  const std::vector<int64_t> shape = tensor_info.GetShape();
  std::vector<const char*> symbols(shape.size(), nullptr);
  if (!shape.empty()) tensor_info.GetSymbolicDimensions(symbols.data(), symbols.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] >= 0) {
      spec.dims.push_back(Dim::Static(shape[i]));
    } else {
      spec.dims.push_back(Dim::Dynamic(symbols[i] != nullptr ? symbols[i] : ""));
    }
  }
  return spec;
}

GraphOptimizationLevel ToOrt(OnnxOptimization level) {
  switch (level) {
    case OnnxOptimization::kDisabled: return ORT_DISABLE_ALL;
    case OnnxOptimization::kBasic: return ORT_ENABLE_BASIC;
    case OnnxOptimization::kExtended: return ORT_ENABLE_EXTENDED;
    case OnnxOptimization::kAll: return ORT_ENABLE_ALL;
  }
  return ORT_ENABLE_ALL;
}

}  // namespace

// How to know an output's shape before running: each dim is static, or equals a dim
// of an input that carries the same symbolic name (e.g. 'batch').
struct OutputPlan {
  bool predictable = false;
  DType dtype = DType::kFloat32;
  std::vector<std::pair<int, int64_t>> dims;  // (input index, its dim) or (-1, static size)
};

struct OnnxModel::Runtime {
  std::unique_ptr<Ort::Session> session;
  Ort::MemoryInfo memory_info{nullptr};
  // ONNX Runtime's own logging stays quiet: every error comes back as a Status.
  Ort::RunOptions run_options{nullptr};
  std::vector<std::string> input_name_storage;
  std::vector<std::string> output_name_storage;
  std::vector<const char*> input_names;
  std::vector<const char*> output_names;
  std::vector<OutputPlan> output_plans;
  // Whether to pre-allocate predictable outputs; cleared for good the first time a
  // prediction proves wrong (ONNX Runtime rejects a mis-shaped output buffer).
  mutable std::atomic<bool> preallocate{false};
};

namespace {

std::vector<OutputPlan> PlanOutputs(const Signature& signature) {
  std::vector<OutputPlan> plans;
  for (const auto& out : signature.outputs) {
    OutputPlan plan;
    plan.dtype = out.dtype;
    plan.predictable = !out.unknown_rank && out.dtype != DType::kString;
    for (const auto& d : out.dims) {
      if (d.is_static()) {
        plan.dims.emplace_back(-1, d.size);
        continue;
      }
      bool bound = false;
      for (size_t i = 0; i < signature.inputs.size() && !bound && !d.symbol.empty(); ++i) {
        const auto& in_dims = signature.inputs[i].dims;
        for (size_t k = 0; k < in_dims.size() && !bound; ++k) {
          if (!in_dims[k].is_static() && in_dims[k].symbol == d.symbol) {
            plan.dims.emplace_back(static_cast<int>(i), static_cast<int64_t>(k));
            bound = true;
          }
        }
      }
      if (!bound) plan.predictable = false;
    }
    plans.push_back(std::move(plan));
  }
  return plans;
}

}  // namespace

Status CopyToOrtValue(const Tensor& tensor, Ort::Value* out) {
  try {
    Ort::AllocatorWithDefaultOptions allocator;
    Ort::Value value = Ort::Value::CreateTensor(allocator, tensor.shape().data(), tensor.shape().size(),
                                                static_cast<ONNXTensorElementDataType>(ToOnnx(tensor.dtype())));
    if (tensor.is_string()) {
      for (size_t k = 0; k < tensor.strings().size(); ++k) {
        const std::string& s = tensor.strings()[k];
        char* buffer = value.GetResizedStringTensorElementBuffer(k, s.size());
        if (!s.empty()) std::memcpy(buffer, s.data(), s.size());
      }
    } else if (tensor.byte_size() != 0) {
      std::memcpy(value.GetTensorMutableRawData(), tensor.data(), tensor.byte_size());
    }
    *out = std::move(value);
    return Status::Ok();
  } catch (const Ort::Exception& e) {
    return Internal(std::string("ONNX Runtime could not make a ") + tensor.Describe() + " tensor: " + e.what());
  }
}

Status CheckOnnxBytes(std::string_view bytes, const std::string& what) {
  if (bytes.empty()) return DataLoss(what + " is empty, not an ONNX model");
  // onnx.ModelProto: 1 ir_version, 7 graph, 8 opset_import, ...
  WireReader reader(bytes);
  WireField field;
  bool has_graph = false;
  while (reader.Next(&field)) {
    if (field.number == 7 && field.type == WireType::kLengthDelimited) has_graph = true;
  }
  if (!reader.status().ok()) return DataLoss(what + " is not an ONNX model: " + reader.status().message());
  if (!has_graph) return DataLoss(what + " is not an ONNX model: it has no graph");
  return Status::Ok();
}

OnnxModel::OnnxModel(std::string path, std::vector<Signature> signatures, std::unique_ptr<Runtime> runtime)
    : Model(std::move(path), std::move(signatures)), runtime_(std::move(runtime)) {}

OnnxModel::~OnnxModel() = default;

Ort::Session& OnnxModel::session() const { return *runtime_->session; }
const std::vector<const char*>& OnnxModel::input_names() const { return runtime_->input_names; }
const std::vector<const char*>& OnnxModel::output_names() const { return runtime_->output_names; }

StatusOr<std::unique_ptr<OnnxModel>> OnnxModel::Load(const std::string& path, const LoadOptions& options) {
  if (IsDirectory(path)) return InvalidArgument(path + " is a directory, not an ONNX file");
  if (!IsRegularFile(path)) return NotFound("no ONNX model at " + path + ": no such file");
  SERVEKIT_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return Create(path, bytes, options, path);
}

StatusOr<std::unique_ptr<OnnxModel>> OnnxModel::LoadFromBytes(std::string_view bytes, const LoadOptions& options,
                                                              const std::string& label) {
  return Create("", bytes, options, label);
}

StatusOr<std::unique_ptr<OnnxModel>> OnnxModel::Create(const std::string& path, std::string_view bytes,
                                                       const LoadOptions& options, const std::string& label) {
  SERVEKIT_RETURN_IF_ERROR(CheckLoadOptions(options));
  SERVEKIT_RETURN_IF_ERROR(CheckOnnxBytes(bytes, label));
  try {
    Ort::SessionOptions session_options;
    if (options.intra_op_threads > 0) session_options.SetIntraOpNumThreads(options.intra_op_threads);
    // Only a pool size is passed on: sequential execution (the default, and what
    // kCallerThread asks for) runs the graph in the calling thread.
    if (options.inter_op_threads > 0) session_options.SetInterOpNumThreads(options.inter_op_threads);
    session_options.SetGraphOptimizationLevel(ToOrt(options.onnx_optimization));
    if (options.device == Device::kGpu) {
      const std::vector<std::string> providers = Ort::GetAvailableProviders();
      if (std::find(providers.begin(), providers.end(), "CUDAExecutionProvider") == providers.end()) {
        std::string have;
        for (const auto& p : providers) have += (have.empty() ? "" : ", ") + p;
        return FailedPrecondition("device 'gpu' requested for " + label +
                                  ", but this ONNX Runtime build has no CUDAExecutionProvider (it has: " +
                                  have + ")");
      }
      OrtCUDAProviderOptions cuda_options;
      session_options.AppendExecutionProvider_CUDA(cuda_options);
    }
    auto runtime = std::make_unique<Runtime>();
    if (!path.empty()) {
      runtime->session = std::make_unique<Ort::Session>(SharedEnv(), path.c_str(), session_options);
    } else {
      runtime->session = std::make_unique<Ort::Session>(SharedEnv(), bytes.data(), bytes.size(), session_options);
    }
    runtime->memory_info = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    Ort::AllocatorWithDefaultOptions allocator;
    Signature signature;
    signature.name = kOnnxEndpoint;
    const Ort::Session& session = *runtime->session;
    for (size_t i = 0; i < session.GetInputCount(); ++i) {
      std::string name = session.GetInputNameAllocated(i, allocator).get();
      SERVEKIT_ASSIGN_OR_RETURN(TensorSpec spec, SpecFromTypeInfo(name, session.GetInputTypeInfo(i), "input"));
      signature.inputs.push_back(std::move(spec));
      runtime->input_name_storage.push_back(std::move(name));
    }
    for (size_t i = 0; i < session.GetOutputCount(); ++i) {
      std::string name = session.GetOutputNameAllocated(i, allocator).get();
      SERVEKIT_ASSIGN_OR_RETURN(TensorSpec spec, SpecFromTypeInfo(name, session.GetOutputTypeInfo(i), "output"));
      signature.outputs.push_back(std::move(spec));
      runtime->output_name_storage.push_back(std::move(name));
    }
    for (const auto& n : runtime->input_name_storage) runtime->input_names.push_back(n.c_str());
    for (const auto& n : runtime->output_name_storage) runtime->output_names.push_back(n.c_str());
    runtime->run_options = Ort::RunOptions();
    runtime->run_options.SetRunLogSeverityLevel(ORT_LOGGING_LEVEL_FATAL);
    runtime->output_plans = PlanOutputs(signature);
    for (const auto& plan : runtime->output_plans) {
      if (plan.predictable) runtime->preallocate = true;
    }
    std::vector<Signature> signatures;
    signatures.push_back(std::move(signature));
    return std::unique_ptr<OnnxModel>(new OnnxModel(path.empty() ? label : path, std::move(signatures),
                                                    std::move(runtime)));
  } catch (const Ort::Exception& e) {
    return Internal("ONNX Runtime could not load " + label + ": " + e.what());
  } catch (const std::exception& e) {
    return Internal("loading " + label + " failed: " + e.what());
  }
}

namespace {

// OrtValue handles on the stack for the usual few inputs and outputs; released on
// scope exit. The run path uses the C API directly: the C++ wrappers would add a
// vector and a type-info object per call.
class ValueArray {
 public:
  explicit ValueArray(size_t n) : n_(n) {
    if (n > kInline) heap_.resize(n);
    data_ = n > kInline ? heap_.data() : inline_;
    std::fill(data_, data_ + n, nullptr);
  }
  ~ValueArray() {
    for (size_t i = 0; i < n_; ++i) {
      if (data_[i] != nullptr) Ort::GetApi().ReleaseValue(data_[i]);
    }
  }
  ValueArray(const ValueArray&) = delete;
  ValueArray& operator=(const ValueArray&) = delete;
  OrtValue** data() { return data_; }
  OrtValue*& operator[](size_t i) { return data_[i]; }
  OrtValue* release(size_t i) {
    OrtValue* v = data_[i];
    data_[i] = nullptr;
    return v;
  }

 private:
  static constexpr size_t kInline = 8;
  size_t n_;
  OrtValue* inline_[kInline];
  std::vector<OrtValue*> heap_;
  OrtValue** data_;
};

// Converts a failed OrtStatus to a Status, releasing it. The message is
// "<what> '<name>': <ONNX Runtime's message>".
Status OrtError(OrtStatus* status, const char* what, const std::string& name) {
  const OrtApi& api = Ort::GetApi();
  std::string message = std::string(what) + " '" + name + "': " + api.GetErrorMessage(status);
  const OrtErrorCode code = api.GetErrorCode(status);
  api.ReleaseStatus(status);
  if (code == ORT_INVALID_ARGUMENT) return InvalidArgument(message);
  if (code == ORT_NO_SUCHFILE) return NotFound(message);
  return Internal(message);
}

// Returns the error of a C API call that failed; nothing at all on success (hot path).
#define SERVEKIT_ORT_RETURN_IF_ERROR(call, what, name)              \
  do {                                                              \
    if (OrtStatus* servekit_ort_status_ = (call)) {                 \
      return OrtError(servekit_ort_status_, what, name);            \
    }                                                               \
  } while (0)

StatusOr<Tensor> FromOrtValue(OrtValue* value, const std::string& name, const std::vector<const Tensor*>& inputs) {
  const OrtApi& api = Ort::GetApi();
  std::shared_ptr<const void> owner(value, [](const void* p) {
    Ort::GetApi().ReleaseValue(static_cast<OrtValue*>(const_cast<void*>(p)));
  });
  int is_tensor = 0;
  SERVEKIT_ORT_RETURN_IF_ERROR(api.IsTensor(value, &is_tensor), "ONNX output", name);
  if (!is_tensor) return Unimplemented("ONNX output '" + name + "' is not a tensor");
  OrtTensorTypeAndShapeInfo* info = nullptr;
  SERVEKIT_ORT_RETURN_IF_ERROR(api.GetTensorTypeAndShape(value, &info), "ONNX output", name);
  ONNXTensorElementDataType element_type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  size_t rank = 0;
  OrtStatus* status = api.GetTensorElementType(info, &element_type);
  if (status == nullptr) status = api.GetDimensionsCount(info, &rank);
  Shape shape(rank);
  if (status == nullptr) status = api.GetDimensions(info, shape.data(), rank);
  api.ReleaseTensorTypeAndShapeInfo(info);
  if (status != nullptr) return OrtError(status, "ONNX output", name);
  const auto dtype = DTypeFromOnnx(static_cast<int>(element_type));
  if (!dtype) return Unimplemented("ONNX Runtime returned a " + OnnxTypeName(element_type) + " tensor");
  SERVEKIT_ASSIGN_OR_RETURN(int64_t n, NumElements(shape));
  if (*dtype == DType::kString) {
    try {
      Ort::UnownedValue v(value);
      const size_t total = v.GetStringTensorDataLength();
      std::string content(total, '\0');
      std::vector<size_t> offsets(static_cast<size_t>(n));
      if (n > 0) v.GetStringTensorContent(content.data(), total, offsets.data(), offsets.size());
      std::vector<std::string> strings(static_cast<size_t>(n));
      for (size_t i = 0; i < strings.size(); ++i) {
        const size_t end = i + 1 < strings.size() ? offsets[i + 1] : total;
        if (offsets[i] > end || end > total) return Internal("ONNX output '" + name + "': bad string offsets");
        strings[i] = content.substr(offsets[i], end - offsets[i]);
      }
      return Tensor::FromStrings(std::move(shape), std::move(strings));
    } catch (const Ort::Exception& e) {
      return Internal("ONNX output '" + name + "': " + e.what());
    }
  }
  const size_t bytes = static_cast<size_t>(n) * DTypeSize(*dtype);
  void* data = nullptr;
  if (bytes != 0) SERVEKIT_ORT_RETURN_IF_ERROR(api.GetTensorMutableData(value, &data), "ONNX output", name);
  SERVEKIT_ASSIGN_OR_RETURN(Tensor t, Tensor::View(*dtype, std::move(shape), data, bytes, std::move(owner)));
  // An output that is an input passed through would point into the caller's memory.
  if (bytes != 0 && AliasesInput(data, inputs)) return t.Copy();
  return t;
}

// Per-thread cache of the OrtValues that view recent input buffers. An OrtValue made
// by CreateTensorWithDataAsOrtValue is only a view (address, byte size, shape, element
// type, CPU memory), so one made for the same view before is interchangeable with a
// new one; a caller feeding the same buffer again (a serving loop, a benchmark)
// skips ONNX Runtime's three allocations per input. Nothing here owns caller memory.
class InputViewCache {
 public:
  ~InputViewCache() {
    for (auto& e : entries_) {
      if (e.value != nullptr) Ort::GetApi().ReleaseValue(e.value);
    }
  }
  // A view of `t` (numeric, non-empty): a cached one, or a new one that is cached.
  OrtStatus* Get(const OrtMemoryInfo* memory, const Tensor& t, ONNXTensorElementDataType type, OrtValue** out) {
    for (auto& e : entries_) {
      if (e.value != nullptr && e.data == t.data() && e.bytes == t.byte_size() && e.type == type &&
          e.shape == t.shape()) {
        *out = e.value;
        return nullptr;
      }
    }
    Entry& e = entries_[next_];
    next_ = (next_ + 1) % kEntries;
    if (e.value != nullptr) Ort::GetApi().ReleaseValue(e.value);
    e.value = nullptr;
    OrtStatus* status = Ort::GetApi().CreateTensorWithDataAsOrtValue(
        memory, const_cast<void*>(t.data()), t.byte_size(), t.shape().data(), t.shape().size(), type, &e.value);
    if (status != nullptr) return status;
    e.data = t.data();
    e.bytes = t.byte_size();
    e.type = type;
    e.shape = t.shape();
    *out = e.value;
    return nullptr;
  }

 private:
  static constexpr size_t kEntries = 8;
  struct Entry {
    OrtValue* value = nullptr;
    const void* data = nullptr;
    size_t bytes = 0;
    ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    Shape shape;
  };
  Entry entries_[kEntries];
  size_t next_ = 0;
};

}  // namespace

namespace {

constexpr uint64_t kMaxPredictedOutputBytes = uint64_t{64} << 20;

// One Ort::Session::Run on `feeds`. With `preallocate`, every output whose shape the
// plan predicts gets a buffer of ours for ONNX Runtime to write into: no output
// allocation by ONNX Runtime and no shape query afterwards. ONNX Runtime checks the
// buffer's shape and fails the run when the prediction is wrong.
Status RunOnce(const OnnxModel& model, const OnnxModel::Runtime& rt, OrtValue* const* feeds,
               const std::vector<const Tensor*>& inputs, bool preallocate, std::vector<NamedTensor>* outputs) {
  const OrtApi& api = Ort::GetApi();
  const size_t n_out = rt.output_names.size();
  ValueArray fetched(n_out);
  std::vector<Tensor> buffers;           // our output buffers ...
  std::vector<int> buffer_of(n_out, -1);  // ... and which output each one is
  if (preallocate) {
    buffers.reserve(n_out);
    for (size_t k = 0; k < n_out; ++k) {
      const OutputPlan& plan = rt.output_plans[k];
      if (!plan.predictable) continue;
      Shape shape(plan.dims.size());
      for (size_t d = 0; d < plan.dims.size(); ++d) {
        const auto [input, value] = plan.dims[d];
        shape[d] = input < 0 ? value : inputs[input]->shape()[value];
      }
      // A prediction is only a guess from the model's declared shapes: never reserve
      // much memory for it. Large outputs are left to ONNX Runtime, whose shape query
      // then costs nothing in comparison.
      auto elements = NumElements(shape);
      if (!elements.ok() || *elements == 0 ||
          static_cast<uint64_t>(*elements) > kMaxPredictedOutputBytes / DTypeSize(plan.dtype)) {
        continue;
      }
      auto buffer = Tensor::AllocateUninitialized(plan.dtype, std::move(shape));
      if (!buffer.ok() || buffer->byte_size() == 0) continue;  // ONNX Runtime allocates this one
      SERVEKIT_ORT_RETURN_IF_ERROR(
          api.CreateTensorWithDataAsOrtValue(rt.memory_info, buffer->mutable_data(), buffer->byte_size(),
                                             buffer->shape().data(), buffer->shape().size(),
                                             static_cast<ONNXTensorElementDataType>(ToOnnx(plan.dtype)), &fetched[k]),
          "ONNX output", rt.output_name_storage[k]);
      buffer_of[k] = static_cast<int>(buffers.size());
      buffers.push_back(std::move(buffer).value());
    }
  }
  SERVEKIT_ORT_RETURN_IF_ERROR(api.Run(*rt.session, rt.run_options, rt.input_names.data(), feeds, inputs.size(),
                                       rt.output_names.data(), n_out, fetched.data()),
                               "ONNX Runtime failed to run", model.path());
  for (size_t k = 0; k < n_out; ++k) {
    if (buffer_of[k] >= 0) {
      // `fetched` releases the OrtValue that wrapped our buffer.
      outputs->push_back(NamedTensor{rt.output_name_storage[k], std::move(buffers[buffer_of[k]])});
      continue;
    }
    SERVEKIT_ASSIGN_OR_RETURN(Tensor t, FromOrtValue(fetched.release(k), rt.output_name_storage[k], inputs));
    outputs->push_back(NamedTensor{rt.output_name_storage[k], std::move(t)});
  }
  return Status::Ok();
}

}  // namespace

Status OnnxModel::RunChecked(size_t /*endpoint_index*/, const std::vector<const Tensor*>& inputs,
                             std::vector<NamedTensor>* outputs) const {
  const Runtime& rt = *runtime_;
  thread_local InputViewCache views;
  ValueArray owned_feeds(inputs.size());  // values made for this call only
  OrtValue* inline_feeds[8];
  std::vector<OrtValue*> heap_feeds(inputs.size() > 8 ? inputs.size() : 0);
  OrtValue** feeds = inputs.size() > 8 ? heap_feeds.data() : inline_feeds;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = *inputs[i];
    const auto type = static_cast<ONNXTensorElementDataType>(ToOnnx(t.dtype()));
    if (!t.is_string() && t.byte_size() != 0) {
      // Zero copy: the value views the caller's bytes, which ONNX Runtime only reads.
      SERVEKIT_ORT_RETURN_IF_ERROR(views.Get(rt.memory_info, t, type, &feeds[i]), "ONNX input",
                                   rt.input_name_storage[i]);
      continue;
    }
    Ort::Value value{nullptr};  // strings and empty tensors: ONNX Runtime owns a copy
    SERVEKIT_RETURN_IF_ERROR(CopyToOrtValue(t, &value).WithContext("input '" + rt.input_name_storage[i] + "'"));
    owned_feeds[i] = feeds[i] = value.release();
  }
  if (rt.preallocate.load(std::memory_order_relaxed)) {
    Status status = RunOnce(*this, rt, feeds, inputs, /*preallocate=*/true, outputs);
    if (status.ok()) return status;
    // A wrong shape prediction, or a genuine failure: run again the ordinary way.
    outputs->clear();
    Status retry = RunOnce(*this, rt, feeds, inputs, /*preallocate=*/false, outputs);
    if (retry.ok()) rt.preallocate.store(false, std::memory_order_relaxed);
    return retry;
  }
  return RunOnce(*this, rt, feeds, inputs, /*preallocate=*/false, outputs);
}

}  // namespace servekit
