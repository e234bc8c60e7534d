#include "cc/tf_saved_model.h"

#include <cstdlib>
#include <cstring>

#include "cc/file_util.h"
#include "cc/protowire.h"
#include "tensorflow/c/c_api.h"

namespace servekit {

// dtype.h converts by number; make sure the numbers are TensorFlow's.
static_assert(TF_FLOAT == 1 && TF_DOUBLE == 2 && TF_INT32 == 3 && TF_UINT8 == 4 && TF_INT16 == 5 &&
              TF_INT8 == 6 && TF_STRING == 7 && TF_INT64 == 9 && TF_BOOL == 10 && TF_BFLOAT16 == 14 &&
              TF_UINT16 == 17 && TF_HALF == 19 && TF_UINT32 == 22 && TF_UINT64 == 23,
              "TF_DataType numbers changed; update cc/dtype.cc");

namespace {

// RAII owners of TensorFlow C handles.
struct StatusDeleter { void operator()(TF_Status* p) const { TF_DeleteStatus(p); } };
struct GraphDeleter { void operator()(TF_Graph* p) const { TF_DeleteGraph(p); } };
struct BufferDeleter { void operator()(TF_Buffer* p) const { TF_DeleteBuffer(p); } };
struct TensorDeleter { void operator()(TF_Tensor* p) const { TF_DeleteTensor(p); } };
struct SessionOptionsDeleter { void operator()(TF_SessionOptions* p) const { TF_DeleteSessionOptions(p); } };
struct DeviceListDeleter { void operator()(TF_DeviceList* p) const { TF_DeleteDeviceList(p); } };
using TfStatusPtr = std::unique_ptr<TF_Status, StatusDeleter>;
using TfGraphPtr = std::unique_ptr<TF_Graph, GraphDeleter>;
using TfBufferPtr = std::unique_ptr<TF_Buffer, BufferDeleter>;
using TfTensorPtr = std::unique_ptr<TF_Tensor, TensorDeleter>;
using TfSessionOptionsPtr = std::unique_ptr<TF_SessionOptions, SessionOptionsDeleter>;
using TfDeviceListPtr = std::unique_ptr<TF_DeviceList, DeviceListDeleter>;

// A session must be closed before it is deleted.
struct SessionDeleter {
  void operator()(TF_Session* p) const {
    TfStatusPtr status(TF_NewStatus());
    TF_CloseSession(p, status.get());
    TF_DeleteSession(p, status.get());
  }
};
using TfSessionPtr = std::unique_ptr<TF_Session, SessionDeleter>;

Status FromTf(const TF_Status* status, const std::string& context) {
  if (TF_GetCode(status) == TF_OK) return Status::Ok();
  const std::string message = context + ": " + TF_Message(status);
  switch (TF_GetCode(status)) {
    case TF_INVALID_ARGUMENT: return InvalidArgument(message);
    case TF_NOT_FOUND: return NotFound(message);
    case TF_FAILED_PRECONDITION: return FailedPrecondition(message);
    case TF_DATA_LOSS: return DataLoss(message);
    case TF_UNIMPLEMENTED: return Unimplemented(message);
    default: return Internal(message);
  }
}

// "op:3" -> ("op", 3); a bare "op" means output 0.
bool SplitTensorName(const std::string& name, std::string* op, int* index) {
  const auto colon = name.rfind(':');
  if (colon == std::string::npos) {
    *op = name;
    *index = 0;
    return !name.empty();
  }
  *op = name.substr(0, colon);
  const std::string digits = name.substr(colon + 1);
  if (op->empty() || digits.empty() || digits.size() > 6) return false;
  int value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  *index = value;
  return true;
}

// Deallocator for numeric input tensors viewing caller memory: the caller owns it.
void NoDeallocate(void*, size_t, void*) {}

// Deallocator for string input tensors: destroy each TF_TString, then free the array.
void DeallocateTStrings(void* data, size_t len, void*) {
  auto* strings = static_cast<TF_TString*>(data);
  for (size_t i = 0; i < len / sizeof(TF_TString); ++i) TF_StringDealloc(&strings[i]);
  std::free(data);
}

StatusOr<TfTensorPtr> ToTfTensor(const Tensor& t) {
  const TF_DataType type = static_cast<TF_DataType>(ToTensorFlow(t.dtype()));
  const int64_t* dims = t.shape().data();
  const int rank = t.rank();
  if (t.is_string()) {
    const size_t n = static_cast<size_t>(t.num_elements());
    const size_t bytes = std::max<size_t>(n * sizeof(TF_TString), 1);
    // Aligned, so that TF_NewTensor never copies (and double-owns) the TF_TStrings.
    const size_t align = std::max<size_t>(TF_TensorDefaultAlignment(), alignof(TF_TString));
    void* data = std::aligned_alloc(align, (bytes + align - 1) / align * align);
    if (data == nullptr) return Internal("out of memory for a string tensor");
    auto* strings = static_cast<TF_TString*>(data);
    for (size_t i = 0; i < n; ++i) {
      TF_StringInit(&strings[i]);
      TF_StringCopy(&strings[i], t.strings()[i].data(), t.strings()[i].size());
    }
    TF_Tensor* tensor = TF_NewTensor(TF_STRING, dims, rank, data, n * sizeof(TF_TString), DeallocateTStrings, nullptr);
    if (tensor == nullptr) {
      DeallocateTStrings(data, n * sizeof(TF_TString), nullptr);
      return Internal("TF_NewTensor failed for a string tensor");
    }
    return TfTensorPtr(tensor);
  }
  TF_Tensor* tensor;
  if (t.byte_size() == 0) {
    tensor = TF_AllocateTensor(type, dims, rank, 0);
  } else {
    // A view of the caller's bytes; TensorFlow copies only when they are misaligned.
    tensor = TF_NewTensor(type, dims, rank, const_cast<void*>(t.data()), t.byte_size(), NoDeallocate, nullptr);
  }
  if (tensor == nullptr) return Internal("TF_NewTensor failed for " + t.Describe());
  return TfTensorPtr(tensor);
}

StatusOr<Tensor> FromTfTensor(TfTensorPtr tensor, const std::vector<const Tensor*>& inputs) {
  TF_Tensor* raw = tensor.get();
  const auto dtype = DTypeFromTensorFlow(TF_TensorType(raw));
  if (!dtype) return Unimplemented("TensorFlow returned a " + TensorFlowTypeName(TF_TensorType(raw)) + " tensor");
  Shape shape(static_cast<size_t>(TF_NumDims(raw)));
  for (size_t i = 0; i < shape.size(); ++i) shape[i] = TF_Dim(raw, static_cast<int>(i));
  if (*dtype == DType::kString) {
    SERVEKIT_ASSIGN_OR_RETURN(int64_t n, NumElements(shape));
    if (static_cast<size_t>(n) * sizeof(TF_TString) > TF_TensorByteSize(raw)) {
      return Internal("TensorFlow returned a string tensor smaller than its shape");
    }
    const auto* strings = static_cast<const TF_TString*>(TF_TensorData(raw));
    std::vector<std::string> values(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      values[i].assign(TF_StringGetDataPointer(&strings[i]), TF_StringGetSize(&strings[i]));
    }
    return Tensor::FromStrings(std::move(shape), std::move(values));
  }
  // A fetched tensor may share its buffer with the graph (a Const op's value) or with
  // the caller's input (a pass-through): then the output must be a copy, or writing
  // to it (NumPy arrays over outputs are writable) would change the model or the input.
  bool exclusive = false;
  if (TF_Tensor* moved = TF_TensorMaybeMove(raw)) {  // only when nobody else holds the buffer
    tensor.release();  // TF_TensorMaybeMove deleted it
    tensor.reset(moved);
    raw = moved;
    exclusive = true;
  }
  const void* data = TF_TensorData(raw);
  const size_t bytes = TF_TensorByteSize(raw);
  std::shared_ptr<const void> owner(tensor.release(), [](const void* p) {
    TF_DeleteTensor(static_cast<TF_Tensor*>(const_cast<void*>(p)));
  });
  SERVEKIT_ASSIGN_OR_RETURN(Tensor view, Tensor::View(*dtype, std::move(shape), data, bytes, std::move(owner)));
  if (bytes != 0 && (!exclusive || AliasesInput(data, inputs))) return view.Copy();
  return view;
}

}  // namespace

struct TfSavedModel::Runtime {
  TfGraphPtr graph;
  TfSessionPtr session;
  struct Endpoint {
    std::vector<TF_Output> inputs;
    std::vector<TF_Output> outputs;
  };
  std::vector<Endpoint> endpoints;  // parallel to signatures()
};

std::string SerializeTfConfig(const LoadOptions& options) {
  TfConfigProto config;
  config.hide_gpus = options.device == Device::kCpu;
  config.intra_op_threads = options.intra_op_threads;
  config.inter_op_threads = options.inter_op_threads;
  return config.Serialize();
}

StatusOr<std::vector<Signature>> ReadSavedModelSignatures(const std::string& dir,
                                                          const std::vector<std::string>& tags) {
  if (!IsDirectory(dir)) {
    if (IsRegularFile(dir)) return InvalidArgument(dir + " is a file, not a SavedModel directory");
    return NotFound("no SavedModel at " + dir + ": no such directory");
  }
  const std::string pb = JoinPath(dir, "saved_model.pb");
  if (!IsRegularFile(pb)) {
    if (IsRegularFile(JoinPath(dir, "saved_model.pbtxt"))) {
      return Unimplemented(dir + " holds saved_model.pbtxt; servekit reads binary saved_model.pb only");
    }
    return NotFound(dir + " is not a SavedModel: it has no saved_model.pb");
  }
  SERVEKIT_ASSIGN_OR_RETURN(std::string bytes, ReadFile(pb));
  auto parsed = ParseSavedModel(bytes);
  if (!parsed.ok()) return DataLoss(pb + " is not a valid SavedModel: " + parsed.status().message());
  const MetaGraphProto* meta = FindMetaGraph(*parsed, tags);
  if (meta == nullptr) {
    std::string have;
    for (const auto& m : parsed->meta_graphs) have += (have.empty() ? "" : ", ") + TagsToString(m.tags);
    return NotFound(dir + " has no MetaGraph tagged " + TagsToString(tags) + "; it has: " + have);
  }
  auto signatures = SignaturesFromMetaGraph(*meta);
  if (!signatures.ok()) return signatures.status().WithContext(pb);
  return signatures;
}

TfSavedModel::TfSavedModel(std::string path, std::vector<Signature> signatures, std::unique_ptr<Runtime> runtime,
                           std::vector<std::string> devices)
    : Model(std::move(path), std::move(signatures)), runtime_(std::move(runtime)), devices_(std::move(devices)) {}

TfSavedModel::~TfSavedModel() = default;

StatusOr<std::unique_ptr<TfSavedModel>> TfSavedModel::Load(const std::string& dir, const LoadOptions& options) {
  SERVEKIT_RETURN_IF_ERROR(CheckLoadOptions(options));
  if (options.tags.empty()) return InvalidArgument("loading a SavedModel needs at least one tag");
  // Our own checks first: TensorFlow's errors for a non-SavedModel are less clear.
  SERVEKIT_RETURN_IF_ERROR(ReadSavedModelSignatures(dir, options.tags).status());

  TfStatusPtr status(TF_NewStatus());
  TfSessionOptionsPtr session_options(TF_NewSessionOptions());
  const std::string config = SerializeTfConfig(options);
  TF_SetConfig(session_options.get(), config.data(), config.size(), status.get());
  SERVEKIT_RETURN_IF_ERROR(FromTf(status.get(), "invalid session config"));

  auto runtime = std::make_unique<Runtime>();
  runtime->graph.reset(TF_NewGraph());
  TfBufferPtr meta_graph_def(TF_NewBuffer());
  std::vector<const char*> tags;
  for (const auto& t : options.tags) tags.push_back(t.c_str());
  TF_Session* session = TF_LoadSessionFromSavedModel(session_options.get(), nullptr, dir.c_str(), tags.data(),
                                                     static_cast<int>(tags.size()), runtime->graph.get(),
                                                     meta_graph_def.get(), status.get());
  if (session != nullptr) runtime->session.reset(session);
  SERVEKIT_RETURN_IF_ERROR(FromTf(status.get(), "TensorFlow could not load the SavedModel at " + dir));
  if (session == nullptr) return Internal("TensorFlow returned no session for " + dir);

  std::vector<std::string> devices;
  bool has_gpu = false;
  TfDeviceListPtr list(TF_SessionListDevices(session, status.get()));
  if (TF_GetCode(status.get()) == TF_OK && list != nullptr) {
    for (int i = 0; i < TF_DeviceListCount(list.get()); ++i) {
      const char* name = TF_DeviceListName(list.get(), i, status.get());
      const char* type = TF_DeviceListType(list.get(), i, status.get());
      if (name == nullptr || type == nullptr) continue;
      devices.push_back(std::string(name) + " (" + type + ")");
      if (std::strcmp(type, "GPU") == 0) has_gpu = true;
    }
  }
  if (options.device == Device::kGpu && !has_gpu) {
    std::string seen;
    for (const auto& d : devices) seen += (seen.empty() ? "" : ", ") + d;
    return FailedPrecondition("device 'gpu' requested for " + dir +
                              ", but TensorFlow sees no GPU (a CPU-only TensorFlow build, or no "
                              "driver/device); devices: " + seen);
  }

  // The signatures TensorFlow actually loaded, from the MetaGraphDef it returns.
  auto meta = ParseMetaGraphDef(
      std::string_view(static_cast<const char*>(meta_graph_def->data), meta_graph_def->length));
  if (!meta.ok()) return meta.status().WithContext("the MetaGraphDef TensorFlow returned for " + dir);
  SERVEKIT_ASSIGN_OR_RETURN(std::vector<Signature> signatures, SignaturesFromMetaGraph(*meta));

  auto resolve = [&](const Signature& sig, const TensorSpec& spec, const char* role) -> StatusOr<TF_Output> {
    std::string op_name;
    int index = 0;
    const std::string where = "signature '" + sig.name + "' " + role + " '" + spec.name + "'";
    if (!SplitTensorName(spec.runtime_name, &op_name, &index)) {
      return DataLoss(where + " has a malformed tensor name '" + spec.runtime_name + "'");
    }
    TF_Operation* op = TF_GraphOperationByName(runtime->graph.get(), op_name.c_str());
    if (op == nullptr || index >= TF_OperationNumOutputs(op)) {
      return DataLoss(where + " names tensor '" + spec.runtime_name + "', which is not in the graph");
    }
    return TF_Output{op, index};
  };
  for (const auto& sig : signatures) {
    Runtime::Endpoint endpoint;
    for (const auto& spec : sig.inputs) {
      SERVEKIT_ASSIGN_OR_RETURN(TF_Output out, resolve(sig, spec, "input"));
      endpoint.inputs.push_back(out);
    }
    for (const auto& spec : sig.outputs) {
      SERVEKIT_ASSIGN_OR_RETURN(TF_Output out, resolve(sig, spec, "output"));
      endpoint.outputs.push_back(out);
    }
    runtime->endpoints.push_back(std::move(endpoint));
  }
  return std::unique_ptr<TfSavedModel>(
      new TfSavedModel(dir, std::move(signatures), std::move(runtime), std::move(devices)));
}

Status TfSavedModel::RunChecked(size_t endpoint_index, const std::vector<const Tensor*>& inputs,
                                OutputSlots* outputs) const {
  const Runtime::Endpoint& endpoint = runtime_->endpoints[endpoint_index];
  std::vector<TfTensorPtr> owned;
  std::vector<TF_Tensor*> feeds;
  owned.reserve(inputs.size());
  feeds.reserve(inputs.size());
  for (const Tensor* t : inputs) {
    SERVEKIT_ASSIGN_OR_RETURN(TfTensorPtr tensor, ToTfTensor(*t));
    feeds.push_back(tensor.get());
    owned.push_back(std::move(tensor));
  }
  std::vector<TF_Tensor*> fetched(endpoint.outputs.size(), nullptr);
  TfStatusPtr status(TF_NewStatus());
  TF_SessionRun(runtime_->session.get(), nullptr, endpoint.inputs.data(), feeds.data(),
                static_cast<int>(feeds.size()), endpoint.outputs.data(), fetched.data(),
                static_cast<int>(fetched.size()), nullptr, 0, nullptr, status.get());
  // Own every fetched tensor before anything can return.
  std::vector<TfTensorPtr> results;
  results.reserve(fetched.size());
  for (TF_Tensor* t : fetched) results.emplace_back(t);
  if (TF_GetCode(status.get()) != TF_OK) {
    return FromTf(status.get(), "TensorFlow failed to run endpoint '" + signatures()[endpoint_index].name + "'");
  }
  const Signature& signature = signatures()[endpoint_index];
  for (size_t i = 0; i < results.size(); ++i) {
    if (results[i] == nullptr) {
      return Internal("TensorFlow returned no tensor for output '" + signature.outputs[i].name + "' of endpoint '" +
                      signature.name + "'");
    }
    SERVEKIT_ASSIGN_OR_RETURN(Tensor t, FromTfTensor(std::move(results[i]), inputs));
    outputs->Set(i, std::move(t));
  }
  return Status::Ok();
}

}  // namespace servekit
