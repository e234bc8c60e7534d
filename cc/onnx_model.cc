#include "cc/onnx_model.h"

#include <algorithm>
#include <atomic>
#include <cstring>

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

StatusOr<std::unique_ptr<OnnxModel>> OnnxModel::Load(const std::string& artifact, const LoadOptions& options) {
  // An ONNX model over 2 GB is a directory: model.onnx and its external data
  // (model.onnx.data), which ONNX Runtime reads relative to the model file's path.
  const std::string external = JoinPath(artifact, kOnnxExternalModelFile);
  const bool with_external_data = IsDirectory(artifact) && IsRegularFile(external);
  const std::string path = with_external_data ? external : artifact;
  if (IsDirectory(path)) {
    return InvalidArgument(path + " is a directory, not an ONNX file (nor one with " + kOnnxExternalModelFile +
                           " and external data)");
  }
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

// An Ort::Exception as a Status: "<what>: <ONNX Runtime's message>".
Status FromOrtException(const Ort::Exception& e, const std::string& what) {
  std::string message = what + ": " + e.what();
  switch (e.GetOrtErrorCode()) {
    case ORT_INVALID_ARGUMENT: return InvalidArgument(std::move(message));
    case ORT_NO_SUCHFILE: return NotFound(std::move(message));
    default: return Internal(std::move(message));
  }
}

// Whether ONNX Runtime refused a run because an output buffer servekit allocated
// has another shape than the one the model produced: the one failure after which
// the run is repeated with outputs ONNX Runtime allocates. ONNX Runtime reports it
// as INVALID_ARGUMENT "The output OrtValue provided for output 'y' of node ... has
// shape {2,3} but the computed output shape for this run is {4,3}" (1.31; the
// wrong-prediction test on extra.onnx pins it).
bool IsOutputShapeMismatch(const Ort::Exception& e) {
  return e.GetOrtErrorCode() == ORT_INVALID_ARGUMENT &&
         std::strstr(e.what(), "but the computed output shape for this run is") != nullptr;
}

// An output ONNX Runtime allocated, as a Tensor that views it (and owns the value).
StatusOr<Tensor> FromOrtValue(Ort::Value value, const std::string& name, const std::vector<const Tensor*>& inputs) {
  try {
    if (!value.IsTensor()) return Unimplemented("ONNX output '" + name + "' is not a tensor");
    const Ort::TensorTypeAndShapeInfo info = value.GetTensorTypeAndShapeInfo();
    const int element_type = static_cast<int>(info.GetElementType());
    const auto dtype = DTypeFromOnnx(element_type);
    if (!dtype) return Unimplemented("ONNX Runtime returned a " + OnnxTypeName(element_type) + " tensor");
    Shape shape = info.GetShape();
    SERVEKIT_ASSIGN_OR_RETURN(int64_t n, NumElements(shape));
    if (*dtype == DType::kString) {
      const size_t total = value.GetStringTensorDataLength();
      std::string content(total, '\0');
      std::vector<size_t> offsets(static_cast<size_t>(n));
      if (n > 0) value.GetStringTensorContent(content.data(), total, offsets.data(), offsets.size());
      std::vector<std::string> strings(static_cast<size_t>(n));
      for (size_t i = 0; i < strings.size(); ++i) {
        const size_t end = i + 1 < strings.size() ? offsets[i + 1] : total;
        if (offsets[i] > end || end > total) return Internal("ONNX output '" + name + "': bad string offsets");
        strings[i] = content.substr(offsets[i], end - offsets[i]);
      }
      return Tensor::FromStrings(std::move(shape), std::move(strings));
    }
    const size_t bytes = static_cast<size_t>(n) * DTypeSize(*dtype);
    void* data = bytes != 0 ? value.GetTensorMutableRawData() : nullptr;
    // The Tensor owns the value from here on.
    std::shared_ptr<const void> owner(value.release(), [](const void* p) {
      Ort::GetApi().ReleaseValue(static_cast<OrtValue*>(const_cast<void*>(p)));
    });
    SERVEKIT_ASSIGN_OR_RETURN(Tensor t, Tensor::View(*dtype, std::move(shape), data, bytes, std::move(owner)));
    // An output that is an input passed through would point into the caller's memory.
    if (bytes != 0 && AliasesInput(data, inputs)) return t.Copy();
    return t;
  } catch (const Ort::Exception& e) {
    return FromOrtException(e, "ONNX output '" + name + "'");
  }
}

// An Ort::Value that owns a copy of `tensor`: how string and empty tensors are fed
// (numeric ones are viewed in place instead).
Ort::Value CopyToOrtValue(const Tensor& tensor) {
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
  return value;
}

// A zero-copy view of a numeric, non-empty `tensor`: ONNX Runtime only reads it.
Ort::Value ViewAsOrtValue(const Ort::MemoryInfo& memory, const Tensor& tensor) {
  return Ort::Value::CreateTensor(memory, const_cast<void*>(tensor.data()), tensor.byte_size(),
                                  tensor.shape().data(), tensor.shape().size(),
                                  static_cast<ONNXTensorElementDataType>(ToOnnx(tensor.dtype())));
}

// Per thread, the feeds of that thread's last call to a session, as the array of
// Ort::Values Session::Run takes. A view made by CreateTensorWithDataAsOrtValue is
// only (address, byte size, shape, element type, CPU memory), so a view of the same
// buffer made for an earlier call is interchangeable with a new one: a caller that
// feeds the same buffers again (a serving loop, a benchmark) skips ONNX Runtime's
// three allocations per input. String and empty inputs are copies and are made
// anew every call. Nothing here owns or reads caller memory.
class FeedCache {
 public:
  // The feeds for `inputs` (in session order) of the session `owner`.
  const Ort::Value* Get(const void* owner, const Ort::MemoryInfo& memory, const std::vector<const Tensor*>& inputs) {
    if (owner != owner_ || values_.size() != inputs.size()) {
      owner_ = owner;
      values_.clear();
      keys_.clear();
      for (size_t i = 0; i < inputs.size(); ++i) values_.emplace_back(nullptr);
      keys_.resize(inputs.size());
    }
    for (size_t i = 0; i < inputs.size(); ++i) {
      const Tensor& t = *inputs[i];
      Key& key = keys_[i];
      const bool viewable = !t.is_string() && t.byte_size() != 0;
      if (viewable && key.data == t.data() && key.bytes == t.byte_size() && key.dtype == t.dtype() &&
          key.shape == t.shape()) {
        continue;
      }
      key = Key{};  // not reusable until it is made (a throw leaves it so)
      values_[i] = viewable ? ViewAsOrtValue(memory, t) : CopyToOrtValue(t);
      if (viewable) key = Key{t.data(), t.byte_size(), t.dtype(), t.shape()};
    }
    return values_.data();
  }

 private:
  struct Key {
    const void* data = nullptr;  // nullptr: never matches (a copy, or nothing yet)
    size_t bytes = 0;
    DType dtype = DType::kFloat32;
    Shape shape;
  };
  const void* owner_ = nullptr;
  std::vector<Ort::Value> values_;
  std::vector<Key> keys_;
};

constexpr uint64_t kMaxPredictedOutputBytes = uint64_t{64} << 20;

}  // namespace

// One Session::Run on `feeds`. With `preallocate`, every output whose shape the plan
// predicts gets a buffer of servekit's for ONNX Runtime to write into: no output
// allocation by ONNX Runtime and no shape query afterwards. ONNX Runtime checks the
// buffer's shape and fails the run when the prediction is wrong (*shape_mismatch).
Status OnnxModel::RunOnce(const Ort::Value* feeds, const std::vector<const Tensor*>& inputs, bool preallocate,
                          OutputSlots* outputs, bool* shape_mismatch) const {
  const Runtime& rt = *runtime_;
  const size_t n_out = rt.output_names.size();
  // Scratch space reused per thread (Run never re-enters on one thread): the per-call
  // path allocates nothing but the outputs themselves.
  thread_local std::vector<Ort::Value> fetched;
  thread_local std::vector<char> ours;  // per output: whether ONNX Runtime writes into our slot
  fetched.clear();
  for (size_t k = 0; k < n_out; ++k) fetched.emplace_back(nullptr);
  ours.assign(n_out, 0);
  bool any_ours = false;
  try {
    if (preallocate) {
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
        auto buffer = outputs->Writable(k, plan.dtype, shape);
        if (!buffer.ok()) continue;  // ONNX Runtime allocates this one
        Tensor& slot = **buffer;
        fetched[k] = Ort::Value::CreateTensor(rt.memory_info, slot.mutable_data(), slot.byte_size(),
                                              slot.shape().data(), slot.shape().size(),
                                              static_cast<ONNXTensorElementDataType>(ToOnnx(plan.dtype)));
        ours[k] = 1;
        any_ours = true;
      }
    }
    rt.session->Run(rt.run_options, rt.input_names.data(), feeds, inputs.size(), rt.output_names.data(),
                    fetched.data(), n_out);
  } catch (const Ort::Exception& e) {
    *shape_mismatch = any_ours && IsOutputShapeMismatch(e);
    return FromOrtException(e, "ONNX Runtime failed to run '" + path() + "'");
  }
  for (size_t k = 0; k < n_out; ++k) {
    if (ours[k]) {
      fetched[k] = Ort::Value{nullptr};  // the view of our slot's buffer; the buffer lives on
      continue;
    }
    SERVEKIT_ASSIGN_OR_RETURN(Tensor t, FromOrtValue(std::move(fetched[k]), rt.output_name_storage[k], inputs));
    outputs->Set(k, std::move(t));
  }
  return Status::Ok();
}

Status OnnxModel::RunChecked(size_t /*endpoint_index*/, const std::vector<const Tensor*>& inputs,
                             OutputSlots* outputs) const {
  const Runtime& rt = *runtime_;
  thread_local FeedCache feed_cache;
  const Ort::Value* feeds = nullptr;
  try {
    feeds = feed_cache.Get(&rt, rt.memory_info, inputs);
  } catch (const Ort::Exception& e) {
    return FromOrtException(e, "ONNX Runtime could not make the inputs of '" + path() + "'");
  }
  bool shape_mismatch = false;
  if (!rt.preallocate.load(std::memory_order_relaxed)) {
    return RunOnce(feeds, inputs, /*preallocate=*/false, outputs, &shape_mismatch);
  }
  Status status = RunOnce(feeds, inputs, /*preallocate=*/true, outputs, &shape_mismatch);
  if (status.ok() || !shape_mismatch) return status;
  // The model's outputs defy their declared shapes: from now on ONNX Runtime
  // allocates them.
  rt.preallocate.store(false, std::memory_order_relaxed);
  outputs->Refill();
  return RunOnce(feeds, inputs, /*preallocate=*/false, outputs, &shape_mismatch);
}

// ---- BareLoop -------------------------------------------------------------------

namespace {

class OnnxBareLoop final : public BareLoop {
 public:
  OnnxBareLoop(Ort::Session* session, const std::vector<const char*>* input_names,
               const std::vector<const char*>* output_names)
      : session_(session), input_names_(input_names), output_names_(output_names) {}

  Status RunOnce() override {
    try {
      session_->Run(Ort::RunOptions{nullptr}, input_names_->data(), values_.data(), values_.size(),
                    output_names_->data(), output_names_->size());
    } catch (const Ort::Exception& e) {
      return FromOrtException(e, "bare ONNX Runtime run failed");
    }
    return Status::Ok();
  }

  std::vector<Ort::Value> values_;
  std::vector<Tensor> keep_;  // owns the bytes the values view

 private:
  Ort::Session* session_;
  const std::vector<const char*>* input_names_;
  const std::vector<const char*>* output_names_;
};

}  // namespace

StatusOr<std::unique_ptr<BareLoop>> OnnxModel::MakeBareLoop(const std::vector<NamedTensor>& inputs) const {
  std::vector<const Tensor*> ordered;
  SERVEKIT_RETURN_IF_ERROR(CheckFeeds(signatures()[0], inputs, &ordered));
  const Runtime& rt = *runtime_;
  auto loop = std::make_unique<OnnxBareLoop>(rt.session.get(), &rt.input_names, &rt.output_names);
  try {
    loop->keep_.reserve(ordered.size());
    for (const Tensor* t : ordered) {
      loop->keep_.push_back(*t);
      const Tensor& kept = loop->keep_.back();
      loop->values_.push_back(kept.is_string() || kept.byte_size() == 0 ? CopyToOrtValue(kept)
                                                                       : ViewAsOrtValue(rt.memory_info, kept));
    }
  } catch (const Ort::Exception& e) {
    return FromOrtException(e, "building ONNX Runtime inputs failed");
  }
  return std::unique_ptr<BareLoop>(std::move(loop));
}

}  // namespace servekit
