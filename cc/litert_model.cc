#include "cc/litert_model.h"

#include <sys/mman.h>

#include <algorithm>
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

// An output dim the signature leaves dynamic: the first input's leading dim (the
// batch), or one only LiteRT's run sizes (a sequence's length, a U-Net's image sides).
constexpr int64_t kBatchDim = -1;
constexpr int64_t kSizedByTheRun = -2;

// Address space reserved for an output with a kSizedByTheRun dim. Such an output's
// size is known only once its kernels have run: LiteRT's layouts before the run keep
// the last run's shape (or, on a compiled model that has run with buffers bound,
// corrupt its next runs), and the kernels write into the buffer bound to the output
// whatever its size, XNNPACK's without checking it (an output one resize larger than
// its buffer overran it, measured on LiteRT 2.3.0). So the buffer is a reservation of
// address space that no output can outgrow, and only the pages an output writes are
// ever committed; its shape is read back after the run. 64 GiB is more than any
// output a model this machine kind runs produces (it would not fit in memory).
constexpr size_t kRunSizedOutputBytes = size_t{64} << 30;

// How many leading bytes of each output's buffer are marked before a run (RunChecked).
constexpr size_t kMarkedBytes = 64;

// The elements of `shape`, or 0 when a dim is negative.
size_t NumElementsOr0(const Shape& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= d >= 0 ? static_cast<size_t>(d) : 0;
  return n;
}

struct Unmap {
  size_t bytes = 0;
  void operator()(void* base) const { munmap(base, bytes); }
};
using Reservation = std::unique_ptr<void, Unmap>;

// `bytes` of address space, committed page by page as they are written.
StatusOr<Reservation> Reserve(size_t bytes, const std::string& what) {
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    return FailedPrecondition(what + " has a dim only LiteRT's run sizes, and servekit reserves " +
                              std::to_string(bytes >> 30) + " GiB of address space (not memory) for such an output; "
                              "this system refused it (vm.overcommit_memory=2 counts reservations as memory)");
  }
  return Reservation(base, Unmap{bytes});
}

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

// Compiles `model` for the CPU (XNNPACK) into `*compiled`.
Status Compile(LiteRtEnvironment environment, ::LiteRtModel model, const std::string& path,
               CompiledModelOwner* compiled) {
  LiteRtOptions raw_options = nullptr;
  LiteRtStatus st = LiteRtCreateOptions(&raw_options);
  if (st != kLiteRtStatusOk) return Failed(StatusCode::kInternal, path, "LiteRtCreateOptions", st);
  OptionsOwner compile_options(raw_options);
  if ((st = LiteRtSetOptionsHardwareAccelerators(raw_options, kLiteRtHwAcceleratorCpu)) != kLiteRtStatusOk) {
    return Failed(StatusCode::kInternal, path, "LiteRtSetOptionsHardwareAccelerators", st);
  }
  LiteRtCompiledModel raw = nullptr;
  st = LiteRtCreateCompiledModel(environment, model, raw_options, &raw);
  compiled->reset(raw);
  if (st != kLiteRtStatusOk) {
    return Failed(StatusCode::kInternal, "LiteRT could not compile " + path, "LiteRtCreateCompiledModel", st);
  }
  return Status::Ok();
}

}  // namespace

Status CheckLiteRtBytes(std::string_view bytes, const std::string& what) {
  if (bytes.empty()) return DataLoss(what + " is empty, not a LiteRT model");
  if (bytes.size() < 8 || bytes.substr(4, 4) != "TFL3") {
    return DataLoss(what + " is not a LiteRT model: no TFL3 FlatBuffer identifier");
  }
  return Status::Ok();
}

// A LiteRT tensor buffer over host memory, and the memory's key: a buffer made for
// an earlier call is reused while the next call's tensor has the same address and
// shape (a serving loop or a benchmark feeding the same buffers), which saves a
// buffer's creation and destruction per tensor and call (~0.15 us each, measured,
// against ~1 us for the zoo MLP's whole inference).
struct BoundBuffer {
  const void* data = nullptr;  // what the buffer views; nullptr when nothing is bound
  // An input's: the caller's bytes it stands for. `data` itself, or, for memory
  // LiteRT cannot view (not 64-byte aligned: NumPy's arrays, most often), the bytes
  // copied into `scratch` on every call.
  const void* source = nullptr;
  Shape shape;
  TensorBufferOwner buffer;
  AlignedBytes scratch;  // servekit's own memory behind the buffer, when it has any
  size_t scratch_bytes = 0;
  Reservation run_sized;  // instead, for an output with a kSizedByTheRun dim
};

// The last call whose outputs LiteRT wrote straight into the caller's tensors, as
// RunAgain compares the next call with it: flat, so that the comparison reads few
// cache lines (a call of a small model takes about 1 us, and each line missed after
// LiteRT's run costs several ns).
struct LastCall {
  struct Seen {
    std::string name;
    DType dtype = DType::kFloat32;
    size_t rank = 0;
    int64_t dims[SERVEKIT_LITERT_TENSOR_MAX_RANK] = {};
    const void* data = nullptr;  // a feed's or output tensor's bytes
    void* copy_to = nullptr;     // a feed LiteRT cannot view: the scratch its bytes go to
    size_t bytes = 0;

    bool Matches(const NamedTensor& named) const {
      const Tensor& t = named.tensor;
      if (t.data() != data || t.dtype() != dtype || t.shape().size() != rank) return false;
      for (size_t d = 0; d < rank; ++d) {
        if (t.shape()[d] != dims[d]) return false;
      }
      return named.name == name;
    }
  };
  bool valid = false;
  std::vector<Seen> feeds, fetches;

  // Remembers a call that ran `signature` on `inputs` (bound as `bound_inputs`) into
  // `outputs`, every one of them the caller's tensor bound as LiteRT's output.
  void Remember(const Signature& signature, const std::vector<const Tensor*>& inputs,
                const std::vector<BoundBuffer>& bound_inputs, const std::vector<Tensor*>& outputs) {
    feeds.resize(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      Set(&feeds[i], signature.inputs[i].name, *inputs[i]);
      const BoundBuffer& bound = bound_inputs[i];
      feeds[i].copy_to = bound.data != bound.source ? bound.scratch.get() : nullptr;
    }
    fetches.resize(outputs.size());
    for (size_t k = 0; k < outputs.size(); ++k) Set(&fetches[k], signature.outputs[k].name, *outputs[k]);
    valid = true;
  }

 private:
  static void Set(Seen* remembered, const std::string& name, const Tensor& t) {
    remembered->name = name;
    remembered->dtype = t.dtype();
    remembered->rank = t.shape().size();
    std::copy(t.shape().begin(), t.shape().end(), remembered->dims);
    remembered->data = t.data();
    remembered->copy_to = nullptr;
    remembered->bytes = t.byte_size();
  }
};

struct LiteRtModel::Runtime {
  ModelOwner model;
  CompiledModelOwner compiled;
  std::vector<int> input_types;   // LiteRtElementType per input
  std::vector<int> output_types;  // LiteRtElementType per output
  // Per output dim: its static size, kBatchDim, or kSizedByTheRun.
  std::vector<std::vector<int64_t>> output_dims;
  std::vector<char> run_sized;  // per output: whether a dim is kSizedByTheRun
  bool any_run_sized = false;
  std::mutex mutex;  // one call at a time on the compiled model; guards what follows
  std::vector<Shape> resized;  // each input's shape as last given to LiteRT
  std::vector<BoundBuffer> inputs, outputs;
  std::vector<LiteRtTensorBuffer> input_handles, output_handles;
  std::vector<Tensor*> written;   // per output: the caller's tensor of the current call
  std::vector<char> copy_out;     // per output: whether LiteRT wrote it into servekit's buffer
  LastCall last;
  // Set once a run left an output unwritten (RunChecked): every later call fails so.
  std::string unrunnable;
  bool ready = false;  // every buffer is bound for the inputs' current addresses and shapes
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
        dims.push_back(kBatchDim);
      } else {
        dims.push_back(kSizedByTheRun);
      }
    }
    const bool run_sized = std::find(dims.begin(), dims.end(), kSizedByTheRun) != dims.end();
    runtime->run_sized.push_back(run_sized);
    runtime->any_run_sized |= run_sized;
    runtime->output_dims.push_back(std::move(dims));
    runtime->output_types.push_back(info.element_type);
    signature.outputs.push_back(std::move(info.spec));
  }
  for (const auto& in : signature.inputs) {
    Shape shape;
    for (const auto& d : in.dims) shape.push_back(d.size);  // -1 where dynamic: forces the first resize
    runtime->resized.push_back(std::move(shape));
  }
  runtime->inputs.resize(signature.inputs.size());
  runtime->outputs.resize(signature.outputs.size());
  runtime->input_handles.resize(signature.inputs.size());
  runtime->output_handles.resize(signature.outputs.size());
  runtime->written.resize(signature.outputs.size());
  runtime->copy_out.resize(signature.outputs.size());

  SERVEKIT_RETURN_IF_ERROR(Compile(environment, model, path, &runtime->compiled));
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

namespace {

// (Re)makes `bound` as a buffer of `element_type` and `shape` over `data`
// (`bytes` long), unless it already is one.
Status Bind(BoundBuffer* bound, int element_type, const Shape& shape, void* data, size_t bytes) {
  if (bound->buffer != nullptr && bound->data == data && bound->shape == shape) return Status::Ok();
  bound->buffer.reset();
  bound->data = nullptr;
  const LiteRtRankedTensorType type = RankedType(element_type, shape);
  LiteRtTensorBuffer buffer = nullptr;
  LiteRtStatus st = LiteRtCreateTensorBufferFromHostMemory(&type, data, bytes, nullptr, &buffer);
  bound->buffer.reset(buffer);
  if (st != kLiteRtStatusOk) {
    bound->buffer.reset();
    return Failed(StatusCode::kInternal, "", "LiteRtCreateTensorBufferFromHostMemory", st);
  }
  bound->data = data;
  bound->shape = shape;
  return Status::Ok();
}

// `bound`'s own aligned memory, at least `bytes` (>= 1) long; false when out of memory.
bool EnsureScratch(BoundBuffer* bound, size_t bytes) {
  bytes = std::max<size_t>(bytes, 1);
  if (bound->scratch != nullptr && bound->scratch_bytes >= bytes) return true;
  bound->buffer.reset();  // it may view the old scratch
  bound->data = nullptr;
  bound->scratch = AllocateAligned(bytes);
  bound->scratch_bytes = bound->scratch != nullptr ? bytes : 0;
  return bound->scratch != nullptr;
}

// "<where> input 'x'" and the like, for errors only.
std::string TensorWhere(const std::string& path, const Signature& signature, const char* role, size_t index) {
  const auto& specs = std::string(role) == "input" ? signature.inputs : signature.outputs;
  return path + " endpoint '" + signature.name + "' " + role + " '" + specs[index].name + "'";
}

bool SameShape(const Shape& a, const Shape& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

// A failure of `status` (message ": LiteRT ...") about `where`.
Status About(const Status& status, StatusCode code, const std::string& where) {
  return Status(code, where + status.message());
}

// Binds `bound` to an output's reservation (made on first use) unless it is bound
// already. The buffer's shape is the signature's with its dynamic dims 1: LiteRT
// does not hold the kernels to it, and the run's shape is read back after it.
Status BindRunSized(BoundBuffer* bound, int element_type, const std::vector<int64_t>& dims,
                    const std::string& where) {
  if (bound->buffer != nullptr) return Status::Ok();
  if (bound->run_sized == nullptr) {
    SERVEKIT_ASSIGN_OR_RETURN(bound->run_sized, Reserve(kRunSizedOutputBytes, where));
  }
  Shape placeholder;
  for (int64_t d : dims) placeholder.push_back(d >= 0 ? d : 1);
  Status bound_ok = Bind(bound, element_type, placeholder, bound->run_sized.get(), kRunSizedOutputBytes);
  return bound_ok.ok() ? bound_ok : About(bound_ok, StatusCode::kInternal, where);
}

// Each output's shape as the run `compiled` has just made gives it (the layouts
// LiteRT reports without allocating: the run's own). `where` names the model and
// endpoint, for errors.
Status ShapesOfTheRun(LiteRtCompiledModel compiled, const Signature& signature, const std::string& where,
                      std::vector<Shape>* shapes) {
  std::vector<LiteRtLayout> layouts(signature.outputs.size());
  LiteRtStatus st = LiteRtGetCompiledModelOutputTensorLayouts(compiled, 0, layouts.size(), layouts.data(),
                                                              /*update_allocation=*/false);
  if (st != kLiteRtStatusOk) {
    return Failed(StatusCode::kInternal, where + ": the outputs' shapes after the run",
                  "LiteRtGetCompiledModelOutputTensorLayouts", st);
  }
  shapes->clear();
  for (size_t k = 0; k < layouts.size(); ++k) {
    const TensorSpec& spec = signature.outputs[k];
    Shape shape(layouts[k].dimensions,
                layouts[k].dimensions + std::min<unsigned>(layouts[k].rank, SERVEKIT_LITERT_TENSOR_MAX_RANK));
    bool fits = shape.size() == spec.dims.size();
    for (size_t d = 0; fits && d < shape.size(); ++d) {
      fits = shape[d] >= 0 && (!spec.dims[d].is_static() || spec.dims[d].size == shape[d]);
    }
    if (!fits) {
      return Internal(where + ": LiteRT's run made output '" + spec.name + "' (" + SpecToString(spec) + ") " +
                      ShapeToString(shape));
    }
    shapes->push_back(std::move(shape));
  }
  return Status::Ok();
}

}  // namespace

bool LiteRtModel::RunAgain(const std::string& endpoint, const std::vector<NamedTensor>& inputs,
                           std::vector<NamedTensor>* outputs, Status* status) const {
  Runtime& rt = *runtime_;
  std::lock_guard<std::mutex> lock(rt.mutex);
  const LastCall& last = rt.last;
  if (!last.valid || inputs.size() != last.feeds.size() || outputs->size() != last.fetches.size() ||
      std::string_view(endpoint) != kLiteRtEndpoint) {
    return false;
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!last.feeds[i].Matches(inputs[i])) return false;
  }
  for (size_t k = 0; k < outputs->size(); ++k) {
    const Tensor& out = (*outputs)[k].tensor;
    // The tensor LiteRT's output buffer views, still the caller's alone.
    if (!last.fetches[k].Matches((*outputs)[k]) || out.is_view() || out.owner().use_count() != 1) return false;
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    const LastCall::Seen& feed = last.feeds[i];
    if (feed.copy_to != nullptr && feed.bytes > 0) std::memcpy(feed.copy_to, feed.data, feed.bytes);
  }
  LiteRtStatus st = LiteRtRunCompiledModel(rt.compiled.get(), 0, rt.input_handles.size(), rt.input_handles.data(),
                                           rt.output_handles.size(), rt.output_handles.data());
  if (st != kLiteRtStatusOk) {
    rt.last.valid = false;
    *status = Failed(StatusCode::kInternal, path() + " endpoint '" + kLiteRtEndpoint + "'", "LiteRtRunCompiledModel", st);
  }
  return true;
}

Status LiteRtModel::RunChecked(size_t endpoint_index, const std::vector<const Tensor*>& inputs,
                               OutputSlots* outputs) const {
  const Signature& signature = signatures()[endpoint_index];
  Runtime& rt = *runtime_;
  std::lock_guard<std::mutex> lock(rt.mutex);
  rt.last.valid = false;
  if (!rt.unrunnable.empty()) return Unimplemented(rt.unrunnable);
  // The common case first: the same input buffers and shapes as the last call, so
  // every LiteRT buffer is bound already and only copied inputs need this call's bytes.
  bool bound_already = rt.ready;
  for (size_t i = 0; bound_already && i < inputs.size(); ++i) {
    const BoundBuffer& bound = rt.inputs[i];
    bound_already = bound.source == inputs[i]->data() && SameShape(bound.shape, inputs[i]->shape());
  }
  if (bound_already) {
    for (size_t i = 0; i < inputs.size(); ++i) {
      const BoundBuffer& bound = rt.inputs[i];
      if (bound.data != bound.source && inputs[i]->byte_size() > 0) {
        std::memcpy(bound.scratch.get(), inputs[i]->data(), inputs[i]->byte_size());
      }
    }
  } else {
    rt.ready = false;
    SERVEKIT_RETURN_IF_ERROR(Prepare(signature, inputs));
    rt.ready = true;
  }
  // Each output goes straight into the caller's tensor when the caller handed back a
  // tensor servekit may overwrite (a serving loop's previous outputs): LiteRT's buffer
  // stays bound to it from one call to the next. Any other output (a new tensor:
  // the first call, or the caller kept the last one) is written into servekit's own
  // buffer and copied out, because binding a buffer costs more than copying a small
  // output.
  for (size_t k = 0; k < signature.outputs.size(); ++k) {
    BoundBuffer& bound = rt.outputs[k];
    if (rt.run_sized[k]) continue;  // bound to its reservation; its tensor is made after the run
    bool reused = false;
    SERVEKIT_ASSIGN_OR_RETURN(Tensor * out, outputs->Writable(k, signature.outputs[k].dtype, bound.shape, &reused));
    void* target = reused && out->byte_size() > 0 ? out->mutable_data() : bound.scratch.get();
    if (bound.data != target) {
      Status bound_ok = Bind(&bound, rt.output_types[k], bound.shape, target, std::max<size_t>(out->byte_size(), 1));
      if (!bound_ok.ok()) {
        rt.ready = false;
        return About(bound_ok, StatusCode::kInternal, TensorWhere(path(), signature, "output", k));
      }
      rt.output_handles[k] = bound.buffer.get();
    }
    rt.written[k] = out;
    rt.copy_out[k] = target == bound.scratch.get();
  }
  // The run, with the first bytes of each output's buffer marked: a kernel that makes
  // its output a dynamic tensor (a Reshape or transposed convolution to a shape computed
  // in the graph) writes it into LiteRT's own memory instead, leaves the buffer as it
  // was, and LiteRT says nothing (later runs then fail). A buffer still marked after the
  // run is marked again otherwise and the model run again, so that an output that
  // happens to equal the mark is not taken for one left unwritten.
  const std::string where = path() + " endpoint '" + signature.name + "'";
  std::vector<Shape> ran;  // every output's shape, as the run made it (run-sized models only)
  auto output_bytes = [&](size_t k) -> std::pair<unsigned char*, size_t> {
    if (rt.run_sized[k]) {
      const size_t bytes = ran.empty() ? kMarkedBytes : NumElementsOr0(ran[k]) * DTypeSize(signature.outputs[k].dtype);
      return {static_cast<unsigned char*>(rt.outputs[k].run_sized.get()), bytes};
    }
    Tensor* out = rt.written[k];
    void* data = rt.copy_out[k] ? rt.outputs[k].scratch.get() : out->mutable_data();
    return {static_cast<unsigned char*>(data), out->byte_size()};
  };
  auto run_marked = [&](unsigned char mark) -> StatusOr<int> {
    ran.clear();
    for (size_t k = 0; k < signature.outputs.size(); ++k) {
      const auto [data, bytes] = output_bytes(k);
      std::memset(data, mark, std::min(bytes, kMarkedBytes));
    }
    LiteRtStatus st = LiteRtRunCompiledModel(rt.compiled.get(), 0, rt.input_handles.size(),
                                             rt.input_handles.data(), rt.output_handles.size(),
                                             rt.output_handles.data());
    if (st != kLiteRtStatusOk) return Failed(StatusCode::kInternal, where, "LiteRtRunCompiledModel", st);
    if (rt.any_run_sized) {
      SERVEKIT_RETURN_IF_ERROR(ShapesOfTheRun(rt.compiled.get(), signature, where, &ran));
    }
    for (size_t k = 0; k < signature.outputs.size(); ++k) {
      const auto [data, bytes] = output_bytes(k);
      const size_t marked = std::min(bytes, kMarkedBytes);
      if (marked > 0 && std::all_of(data, data + marked, [mark](unsigned char b) { return b == mark; })) {
        return static_cast<int>(k);
      }
    }
    return -1;
  };
  SERVEKIT_ASSIGN_OR_RETURN(int unwritten, run_marked(0xA5));
  if (unwritten >= 0) {
    // Run again marked otherwise: a run after one that left an output in LiteRT's
    // memory fails (measured), and one whose output merely equals the mark writes it.
    StatusOr<int> again = run_marked(0x5A);
    if (again.ok() && *again < 0) unwritten = -1;
  }
  if (unwritten >= 0) {
    const TensorSpec& spec = signature.outputs[unwritten];
    rt.unrunnable = where + ": LiteRT's run left output '" + spec.name + "' (" + SpecToString(spec) +
                    ") unwritten: its kernel makes it a dynamic tensor in LiteRT's own memory (a Reshape or "
                    "transposed convolution to a shape computed in the graph), which LiteRT's C API does not hand "
                    "back. The model runs in ai_edge_litert (Python), which verified it at export";
    return Unimplemented(rt.unrunnable);
  }
  bool into_callers = !rt.any_run_sized;
  if (rt.any_run_sized) {
    for (size_t k = 0; k < ran.size(); ++k) {
      if (!rt.run_sized[k]) continue;
      SERVEKIT_ASSIGN_OR_RETURN(Tensor * out, outputs->Writable(k, signature.outputs[k].dtype, ran[k]));
      if (out->byte_size() > kRunSizedOutputBytes) {
        return Internal(TensorWhere(path(), signature, "output", k) + " is " + out->Describe() +
                        ", larger than the address space reserved for it");
      }
      if (out->byte_size() > 0) std::memcpy(out->mutable_data(), rt.outputs[k].run_sized.get(), out->byte_size());
    }
  }
  for (size_t k = 0; k < rt.written.size(); ++k) {
    if (!rt.copy_out[k] || rt.run_sized[k]) continue;
    into_callers = false;
    Tensor* out = rt.written[k];
    if (out->byte_size() > 0) std::memcpy(out->mutable_data(), rt.outputs[k].scratch.get(), out->byte_size());
  }
  if (into_callers) rt.last.Remember(signature, inputs, rt.inputs, rt.written);
  return Status::Ok();
}

// Resizes LiteRT's inputs to `inputs`' shapes where they changed and binds a tensor
// buffer to each input (the caller's bytes when 64-byte aligned, else a copy in the
// input's scratch) and to each output (servekit's memory, sized from the
// signature). Called with the mutex held.
Status LiteRtModel::Prepare(const Signature& signature, const std::vector<const Tensor*>& inputs) const {
  Runtime& rt = *runtime_;
  for (const Tensor* t : inputs) {
    if (t->rank() > SERVEKIT_LITERT_TENSOR_MAX_RANK) {
      return InvalidArgument(path() + " endpoint '" + signature.name + "': rank over 8");
    }
    for (int64_t d : t->shape()) {
      if (d > INT32_MAX) return InvalidArgument(path() + " endpoint '" + signature.name + "': a dim over 2^31 - 1");
    }
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = *inputs[i];
    if (t.shape() != rt.resized[i]) {
      const std::vector<int> dims(t.shape().begin(), t.shape().end());
      LiteRtStatus st = LiteRtCompiledModelResizeInputTensor(rt.compiled.get(), 0, i, dims.data(), dims.size());
      if (st != kLiteRtStatusOk) {
        return Failed(StatusCode::kInvalidArgument, TensorWhere(path(), signature, "input", i) + " to " + t.Describe(),
                      "LiteRtCompiledModelResizeInputTensor", st);
      }
      rt.resized[i] = t.shape();
    }
    BoundBuffer& bound = rt.inputs[i];
    void* data = const_cast<void*>(t.data());
    if (t.byte_size() == 0 || reinterpret_cast<uintptr_t>(data) % SERVEKIT_LITERT_HOST_MEMORY_ALIGNMENT != 0) {
      // LiteRT reads host memory 64-byte aligned: a copy in the input's own scratch.
      if (!EnsureScratch(&bound, t.byte_size())) {
        return Internal(TensorWhere(path(), signature, "input", i) + ": out of memory");
      }
      if (t.byte_size() > 0) std::memcpy(bound.scratch.get(), t.data(), t.byte_size());
      data = bound.scratch.get();
    }
    Status bound_ok = Bind(&bound, rt.input_types[i], t.shape(), data, t.byte_size());
    if (!bound_ok.ok()) return About(bound_ok, StatusCode::kInternal, TensorWhere(path(), signature, "input", i));
    bound.source = t.data();
    rt.input_handles[i] = bound.buffer.get();
  }
  // LiteRT writes each output into servekit's buffer for it, sized from the
  // signature; the buffers stay bound while the batch stays, and each call's
  // outputs are copied out of them.
  const int64_t batch = inputs.empty() || inputs[0]->rank() == 0 ? 0 : inputs[0]->shape()[0];
  for (size_t k = 0; k < signature.outputs.size(); ++k) {
    const TensorSpec& spec = signature.outputs[k];
    BoundBuffer& bound = rt.outputs[k];
    if (rt.run_sized[k]) {
      const std::string where = TensorWhere(path(), signature, "output", k);
      SERVEKIT_RETURN_IF_ERROR(BindRunSized(&bound, rt.output_types[k], rt.output_dims[k], where));
      rt.output_handles[k] = bound.buffer.get();
      continue;
    }
    Shape shape;
    for (int64_t d : rt.output_dims[k]) shape.push_back(d >= 0 ? d : batch);
    if (bound.buffer == nullptr || bound.shape != shape) {
      SERVEKIT_ASSIGN_OR_RETURN(int64_t elements, NumElements(shape));
      const size_t bytes = static_cast<size_t>(elements) * DTypeSize(spec.dtype);
      if (!EnsureScratch(&bound, bytes)) {
        return Internal(TensorWhere(path(), signature, "output", k) + ": out of memory");
      }
      Status bound_ok = Bind(&bound, rt.output_types[k], shape, bound.scratch.get(), std::max<size_t>(bytes, 1));
      if (!bound_ok.ok()) return About(bound_ok, StatusCode::kInternal, TensorWhere(path(), signature, "output", k));
    }
    rt.output_handles[k] = bound.buffer.get();
  }
  return Status::Ok();
}

// ---- BareLoop -------------------------------------------------------------------

namespace {

class LiteRtBareLoop final : public BareLoop {
 public:
  Status RunOnce() override {
    LiteRtStatus st = LiteRtRunCompiledModel(compiled_.get(), 0, inputs_.size(), inputs_.data(), outputs_.size(),
                                             outputs_.data());
    if (st != kLiteRtStatusOk) return Failed(StatusCode::kInternal, "bare LiteRT run", "LiteRtRunCompiledModel", st);
    return Status::Ok();
  }

  CompiledModelOwner compiled_;        // its own: the runner's resizes cannot touch it
  std::vector<BoundBuffer> buffers_;  // inputs, then outputs
  std::vector<LiteRtTensorBuffer> inputs_, outputs_;
};

}  // namespace

StatusOr<std::unique_ptr<BareLoop>> LiteRtModel::MakeBareLoop(const std::vector<NamedTensor>& inputs) const {
  const Signature& signature = signatures()[0];
  std::vector<const Tensor*> ordered;
  SERVEKIT_RETURN_IF_ERROR(CheckFeeds(signature, inputs, &ordered));
  const Runtime& rt = *runtime_;
  SERVEKIT_ASSIGN_OR_RETURN(LiteRtEnvironment environment, SharedEnvironment());
  auto state = std::make_unique<LiteRtBareLoop>();
  SERVEKIT_RETURN_IF_ERROR(Compile(environment, rt.model.get(), path(), &state->compiled_));
  state->buffers_.resize(ordered.size() + signature.outputs.size());
  for (size_t i = 0; i < ordered.size(); ++i) {
    const Tensor& t = *ordered[i];
    const std::vector<int> dims(t.shape().begin(), t.shape().end());
    LiteRtStatus st = LiteRtCompiledModelResizeInputTensor(state->compiled_.get(), 0, i, dims.data(), dims.size());
    if (st != kLiteRtStatusOk) return Failed(StatusCode::kInvalidArgument, path(), "LiteRtCompiledModelResizeInputTensor", st);
    BoundBuffer& bound = state->buffers_[i];
    if (!EnsureScratch(&bound, t.byte_size())) return Internal(path() + ": out of memory");
    if (t.byte_size() > 0) std::memcpy(bound.scratch.get(), t.data(), t.byte_size());
    Status bound_ok = Bind(&bound, rt.input_types[i], t.shape(), bound.scratch.get(), t.byte_size());
    if (!bound_ok.ok()) return About(bound_ok, StatusCode::kInternal, path() + " bare loop input " + std::to_string(i));
    state->inputs_.push_back(bound.buffer.get());
  }
  const int64_t batch = ordered.empty() || ordered[0]->rank() == 0 ? 0 : ordered[0]->shape()[0];
  for (size_t k = 0; k < signature.outputs.size(); ++k) {
    BoundBuffer& bound = state->buffers_[ordered.size() + k];
    if (rt.run_sized[k]) {
      const std::string where = path() + " bare loop output '" + signature.outputs[k].name + "'";
      SERVEKIT_RETURN_IF_ERROR(BindRunSized(&bound, rt.output_types[k], rt.output_dims[k], where));
      state->outputs_.push_back(bound.buffer.get());
      continue;
    }
    Shape shape;
    for (int64_t d : rt.output_dims[k]) shape.push_back(d >= 0 ? d : batch);
    SERVEKIT_ASSIGN_OR_RETURN(int64_t elements, NumElements(shape));
    const size_t bytes = std::max<size_t>(static_cast<size_t>(elements) * DTypeSize(signature.outputs[k].dtype), 1);
    if (!EnsureScratch(&bound, bytes)) return Internal(path() + ": out of memory");
    Status bound_ok = Bind(&bound, rt.output_types[k], shape, bound.scratch.get(), bytes);
    if (!bound_ok.ok()) return About(bound_ok, StatusCode::kInternal, path() + " bare loop output " + std::to_string(k));
    state->outputs_.push_back(bound.buffer.get());
  }
  return std::unique_ptr<BareLoop>(std::move(state));
}

}  // namespace servekit
