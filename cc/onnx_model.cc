#include "cc/onnx_model.h"

#include <algorithm>

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

struct OnnxModel::Runtime {
  std::unique_ptr<Ort::Session> session;
  Ort::MemoryInfo memory_info{nullptr};
  std::vector<std::string> input_name_storage;
  std::vector<std::string> output_name_storage;
  std::vector<const char*> input_names;
  std::vector<const char*> output_names;
};

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
  SERVEKIT_RETURN_IF_ERROR(CheckOnnxBytes(bytes, label));
  try {
    Ort::SessionOptions session_options;
    if (options.intra_op_threads > 0) session_options.SetIntraOpNumThreads(options.intra_op_threads);
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

StatusOr<std::vector<Tensor>> OnnxModel::RunChecked(size_t /*endpoint_index*/,
                                                    const std::vector<const Tensor*>& inputs) const {
  try {
    std::vector<Ort::Value> feeds;
    feeds.reserve(inputs.size());
    Ort::AllocatorWithDefaultOptions allocator;
    for (const Tensor* t : inputs) {
      const auto type = static_cast<ONNXTensorElementDataType>(ToOnnx(t->dtype()));
      const int64_t* dims = t->shape().data();
      const size_t rank = t->shape().size();
      if (t->is_string()) {
        Ort::Value value = Ort::Value::CreateTensor(allocator, dims, rank, type);
        for (size_t i = 0; i < t->strings().size(); ++i) {
          const std::string& s = t->strings()[i];
          char* buffer = value.GetResizedStringTensorElementBuffer(i, s.size());
          if (!s.empty()) std::memcpy(buffer, s.data(), s.size());
        }
        feeds.push_back(std::move(value));
      } else if (t->byte_size() == 0) {
        feeds.push_back(Ort::Value::CreateTensor(allocator, dims, rank, type));
      } else {
        // Zero copy: the value views the caller's bytes, which ONNX Runtime only reads.
        feeds.push_back(Ort::Value::CreateTensor(runtime_->memory_info, const_cast<void*>(t->data()),
                                                 t->byte_size(), dims, rank, type));
      }
    }
    std::vector<Ort::Value> results =
        runtime_->session->Run(Ort::RunOptions{nullptr}, runtime_->input_names.data(), feeds.data(), feeds.size(),
                               runtime_->output_names.data(), runtime_->output_names.size());
    std::vector<Tensor> outputs;
    outputs.reserve(results.size());
    for (size_t k = 0; k < results.size(); ++k) {
      Ort::Value& value = results[k];
      if (!value.IsTensor()) {
        return Unimplemented(std::string("ONNX output '") + runtime_->output_names[k] + "' is not a tensor");
      }
      auto info = value.GetTensorTypeAndShapeInfo();
      const int element_type = static_cast<int>(info.GetElementType());
      const auto dtype = DTypeFromOnnx(element_type);
      if (!dtype) return Unimplemented("ONNX Runtime returned a " + OnnxTypeName(element_type) + " tensor");
      Shape shape = info.GetShape();
      if (*dtype == DType::kString) {
        const size_t count = info.GetElementCount();
        const size_t total = value.GetStringTensorDataLength();
        std::string content(total, '\0');
        std::vector<size_t> offsets(count);
        if (count > 0) value.GetStringTensorContent(content.data(), total, offsets.data(), count);
        std::vector<std::string> strings(count);
        for (size_t i = 0; i < count; ++i) {
          const size_t end = i + 1 < count ? offsets[i + 1] : total;
          strings[i] = content.substr(offsets[i], end - offsets[i]);
        }
        SERVEKIT_ASSIGN_OR_RETURN(Tensor t, Tensor::FromStrings(std::move(shape), std::move(strings)));
        outputs.push_back(std::move(t));
        continue;
      }
      SERVEKIT_ASSIGN_OR_RETURN(int64_t n, NumElements(shape));
      const size_t bytes = static_cast<size_t>(n) * DTypeSize(*dtype);
      const void* data = bytes == 0 ? nullptr : value.GetTensorRawData();
      auto holder = std::make_shared<Ort::Value>(std::move(value));
      SERVEKIT_ASSIGN_OR_RETURN(Tensor t, Tensor::View(*dtype, std::move(shape), data, bytes, std::move(holder)));
      if (bytes != 0 && AliasesInput(data, inputs)) {
        SERVEKIT_ASSIGN_OR_RETURN(t, t.Copy());
      }
      outputs.push_back(std::move(t));
    }
    return outputs;
  } catch (const Ort::Exception& e) {
    return Internal("ONNX Runtime failed to run " + path() + ": " + e.what());
  } catch (const std::exception& e) {
    return Internal("running " + path() + " failed: " + e.what());
  }
}

}  // namespace servekit
