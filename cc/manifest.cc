#include "cc/manifest.h"

#include <algorithm>

#include "cc/file_util.h"

namespace servekit {

using nlohmann::json;

namespace {

// Field access with errors that name the JSON path, e.g. "endpoints[0].inputs[1].dtype".
class Reader {
 public:
  static Status Error(const std::string& where, const std::string& what) {
    return InvalidArgument("manifest field '" + where + "' " + what);
  }

  static StatusOr<const json*> Field(const json& object, const std::string& where, const char* key,
                                     bool required = true) {
    auto it = object.find(key);
    if (it == object.end()) {
      if (required) return Error(Join(where, key), "is missing");
      return static_cast<const json*>(nullptr);
    }
    return &*it;
  }

  static StatusOr<std::string> String(const json& object, const std::string& where, const char* key,
                                      bool required = true) {
    SERVEKIT_ASSIGN_OR_RETURN(const json* v, Field(object, where, key, required));
    if (v == nullptr) return std::string();
    if (!v->is_string()) return Error(Join(where, key), "must be a string");
    return v->get<std::string>();
  }

  // An optional boolean, false when absent.
  static StatusOr<bool> Bool(const json& object, const std::string& where, const char* key) {
    SERVEKIT_ASSIGN_OR_RETURN(const json* v, Field(object, where, key, false));
    if (v == nullptr) return false;
    if (!v->is_boolean()) return Error(Join(where, key), "must be true or false");
    return v->get<bool>();
  }

  static StatusOr<const json*> Array(const json& object, const std::string& where, const char* key,
                                     bool required = true) {
    SERVEKIT_ASSIGN_OR_RETURN(const json* v, Field(object, where, key, required));
    if (v != nullptr && !v->is_array()) return Error(Join(where, key), "must be a list");
    return v;
  }

  static StatusOr<const json*> Object(const json& object, const std::string& where, const char* key,
                                      bool required = true) {
    SERVEKIT_ASSIGN_OR_RETURN(const json* v, Field(object, where, key, required));
    if (v != nullptr && !v->is_object()) return Error(Join(where, key), "must be an object");
    return v;
  }

  static std::string Join(const std::string& where, const std::string& key) {
    return where.empty() ? key : where + "." + key;
  }
  static std::string Index(const std::string& where, size_t i) { return where + "[" + std::to_string(i) + "]"; }
};

// A manifest path must stay inside the export: relative, no "..", no empty parts.
Status CheckRelativePath(const std::string& where, const std::string& path) {
  if (path.empty()) return Reader::Error(where, "is an empty path");
  if (path[0] == '/') return Reader::Error(where, "must be relative to the manifest, not '" + path + "'");
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    const std::string part = path.substr(start, end - start);
    if (part == ".." || part.empty()) {
      return Reader::Error(where, "'" + path + "' must stay inside the export directory");
    }
    start = end + 1;
  }
  return Status::Ok();
}

StatusOr<TensorSpec> ParseTensor(const json& j, const std::string& where) {
  if (!j.is_object()) return Reader::Error(where, "must be an object");
  TensorSpec spec;
  SERVEKIT_ASSIGN_OR_RETURN(spec.name, Reader::String(j, where, "name"));
  SERVEKIT_ASSIGN_OR_RETURN(std::string dtype, Reader::String(j, where, "dtype"));
  auto parsed = DTypeFromName(dtype);
  if (!parsed) {
    return Reader::Error(Reader::Join(where, "dtype"),
                         "has unknown dtype '" + dtype + "' (expected one of float16 bfloat16 float32 "
                         "float64 int8 int16 int32 int64 uint8 uint16 uint32 uint64 bool string)");
  }
  spec.dtype = *parsed;
  SERVEKIT_ASSIGN_OR_RETURN(const json* shape, Reader::Array(j, where, "shape"));
  for (size_t i = 0; i < shape->size(); ++i) {
    const json& d = (*shape)[i];
    const std::string dim_where = Reader::Index(Reader::Join(where, "shape"), i);
    if (d.is_null()) {
      spec.dims.push_back(Dim::Dynamic());
    } else if (d.is_string()) {
      spec.dims.push_back(Dim::Dynamic(d.get<std::string>()));
    } else if (d.is_number_integer() && d.get<int64_t>() >= 0) {
      spec.dims.push_back(Dim::Static(d.get<int64_t>()));
    } else {
      return Reader::Error(dim_where, "must be an integer >= 0, a name or null");
    }
  }
  return spec;
}

StatusOr<std::vector<TensorSpec>> ParseTensors(const json& endpoint, const std::string& where, const char* key) {
  SERVEKIT_ASSIGN_OR_RETURN(const json* list, Reader::Array(endpoint, where, key));
  std::vector<TensorSpec> specs;
  for (size_t i = 0; i < list->size(); ++i) {
    const std::string w = Reader::Index(Reader::Join(where, key), i);
    SERVEKIT_ASSIGN_OR_RETURN(TensorSpec spec, ParseTensor((*list)[i], w));
    if (FindSpec(specs, spec.name) != nullptr) return Reader::Error(w, "repeats the name '" + spec.name + "'");
    specs.push_back(std::move(spec));
  }
  return specs;
}

StatusOr<std::vector<std::pair<std::string, std::string>>> ParseStringMap(const json& object,
                                                                          const std::string& where,
                                                                          const char* key, bool paths) {
  SERVEKIT_ASSIGN_OR_RETURN(const json* map, Reader::Object(object, where, key));
  std::vector<std::pair<std::string, std::string>> out;
  for (auto it = map->begin(); it != map->end(); ++it) {
    const std::string w = Reader::Join(Reader::Join(where, key), it.key());
    if (!it.value().is_string()) return Reader::Error(w, "must be a string");
    const std::string value = it.value().get<std::string>();
    SERVEKIT_RETURN_IF_ERROR(CheckRelativePath(w, paths ? value : it.key()));
    out.emplace_back(it.key(), value);
  }
  return out;
}

StatusOr<std::optional<int64_t>> OptionalSize(const json& object, const std::string& where, const char* key) {
  SERVEKIT_ASSIGN_OR_RETURN(const json* v, Reader::Field(object, where, key, false));
  if (v == nullptr) return std::optional<int64_t>();
  if (!v->is_number_integer() || v->get<int64_t>() < 0) {
    return Reader::Error(Reader::Join(where, key), "must be an integer >= 0");
  }
  return std::optional<int64_t>(v->get<int64_t>());
}

// The endpoint's optional "dims": {symbol: {"verified": [sizes], "window", "max", "note"}};
// each symbol must name a dynamic dim of the endpoint's tensors.
StatusOr<std::vector<DimRecord>> ParseDims(const json& endpoint, const std::string& where,
                                           const Signature& signature) {
  SERVEKIT_ASSIGN_OR_RETURN(const json* dims, Reader::Object(endpoint, where, "dims", false));
  std::vector<DimRecord> records;
  if (dims == nullptr) return records;
  for (auto it = dims->begin(); it != dims->end(); ++it) {
    const std::string w = Reader::Join(Reader::Join(where, "dims"), it.key());
    bool known = false;
    for (const auto* specs : {&signature.inputs, &signature.outputs}) {
      for (const auto& spec : *specs) {
        for (const auto& d : spec.dims) known = known || (!d.is_static() && d.symbol == it.key());
      }
    }
    if (!known) return Reader::Error(w, "names no dynamic dim of the endpoint's inputs or outputs");
    if (!it.value().is_object()) return Reader::Error(w, "must be an object {verified, window, max, note}");
    DimRecord r;
    r.symbol = it.key();
    SERVEKIT_ASSIGN_OR_RETURN(const json* verified, Reader::Array(it.value(), w, "verified"));
    for (const auto& v : *verified) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0) {
        return Reader::Error(Reader::Join(w, "verified"), "must be a list of integers >= 0");
      }
      r.verified.push_back(v.get<int64_t>());
    }
    std::sort(r.verified.begin(), r.verified.end());
    SERVEKIT_ASSIGN_OR_RETURN(r.window, OptionalSize(it.value(), w, "window"));
    SERVEKIT_ASSIGN_OR_RETURN(r.max, OptionalSize(it.value(), w, "max"));
    SERVEKIT_ASSIGN_OR_RETURN(r.note, Reader::String(it.value(), w, "note", false));
    records.push_back(std::move(r));
  }
  return records;
}

StatusOr<Manifest> ParseJson(const json& root, const std::string& base_dir) {
  if (!root.is_object()) return InvalidArgument("manifest must be a JSON object");
  Manifest m;
  m.base_dir = base_dir;
  SERVEKIT_ASSIGN_OR_RETURN(const json* version, Reader::Field(root, "", "servekit_manifest"));
  if (!version->is_number_integer()) return Reader::Error("servekit_manifest", "must be an integer");
  if (version->get<int64_t>() != kManifestVersion) {
    return Unimplemented("manifest version " + version->dump() + " is not supported (this servekit reads " +
                         "version " + std::to_string(kManifestVersion) + ")");
  }
  SERVEKIT_ASSIGN_OR_RETURN(m.model, Reader::String(root, "", "model"));
  SERVEKIT_ASSIGN_OR_RETURN(m.source_backend, Reader::String(root, "", "source_backend", false));
  SERVEKIT_ASSIGN_OR_RETURN(const json* tools, Reader::Object(root, "", "tools", false));
  if (tools != nullptr) {
    for (auto it = tools->begin(); it != tools->end(); ++it) {
      m.tools[it.key()] = it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
    }
  }

  SERVEKIT_ASSIGN_OR_RETURN(const json* artifacts, Reader::Array(root, "", "artifacts"));
  for (size_t i = 0; i < artifacts->size(); ++i) {
    const json& a = (*artifacts)[i];
    const std::string where = Reader::Index("artifacts", i);
    if (!a.is_object()) return Reader::Error(where, "must be an object");
    ManifestArtifact artifact;
    SERVEKIT_ASSIGN_OR_RETURN(std::string format, Reader::String(a, where, "format"));
    auto f = FormatFromName(format);
    if (!f) return Reader::Error(Reader::Join(where, "format"), "has unknown format '" + format + "'");
    artifact.format = *f;
    if (m.FindArtifact(*f) != nullptr) return Reader::Error(where, "repeats format '" + format + "'");
    SERVEKIT_ASSIGN_OR_RETURN(artifact.path, Reader::String(a, where, "path"));
    SERVEKIT_RETURN_IF_ERROR(CheckRelativePath(Reader::Join(where, "path"), artifact.path));
    SERVEKIT_ASSIGN_OR_RETURN(const json* tags, Reader::Array(a, where, "tags", false));
    if (tags != nullptr) {
      for (const auto& t : *tags) {
        if (!t.is_string()) return Reader::Error(Reader::Join(where, "tags"), "must be a list of strings");
        artifact.tags.push_back(t.get<std::string>());
      }
    } else if (artifact.format == ModelFormat::kTfSavedModel) {
      artifact.tags = {"serve"};
    }
    SERVEKIT_ASSIGN_OR_RETURN(const json* opset, Reader::Field(a, where, "opset", false));
    if (opset != nullptr) {
      if (!opset->is_number_integer()) return Reader::Error(Reader::Join(where, "opset"), "must be an integer");
      artifact.opset = opset->get<int64_t>();
    }
    SERVEKIT_ASSIGN_OR_RETURN(artifact.precision, Reader::String(a, where, "precision", false));
    SERVEKIT_ASSIGN_OR_RETURN(artifact.converter, Reader::String(a, where, "converter", false));
    SERVEKIT_ASSIGN_OR_RETURN(artifact.files, ParseStringMap(a, where, "files", false));
    SERVEKIT_ASSIGN_OR_RETURN(artifact.dim_names, Reader::Bool(a, where, "dim_names"));
    m.artifacts.push_back(std::move(artifact));
  }

  SERVEKIT_ASSIGN_OR_RETURN(const json* endpoints, Reader::Array(root, "", "endpoints"));
  for (size_t i = 0; i < endpoints->size(); ++i) {
    const json& e = (*endpoints)[i];
    const std::string where = Reader::Index("endpoints", i);
    if (!e.is_object()) return Reader::Error(where, "must be an object");
    ManifestEndpoint endpoint;
    SERVEKIT_ASSIGN_OR_RETURN(endpoint.signature.name, Reader::String(e, where, "name"));
    if (m.FindEndpoint(endpoint.signature.name) != nullptr) {
      return Reader::Error(where, "repeats endpoint '" + endpoint.signature.name + "'");
    }
    SERVEKIT_ASSIGN_OR_RETURN(const json* method, Reader::Field(e, where, "method_name", false));
    endpoint.signature.method_name = "tensorflow/serving/predict";
    if (method != nullptr) {
      if (!method->is_string()) return Reader::Error(Reader::Join(where, "method_name"), "must be a string");
      endpoint.signature.method_name = method->get<std::string>();
    }
    SERVEKIT_ASSIGN_OR_RETURN(const json* formats, Reader::Array(e, where, "formats"));
    for (const auto& f : *formats) {
      auto format = f.is_string() ? FormatFromName(f.get<std::string>()) : std::nullopt;
      if (!format) return Reader::Error(Reader::Join(where, "formats"), "has unknown format " + f.dump());
      endpoint.formats.push_back(*format);
    }
    SERVEKIT_ASSIGN_OR_RETURN(endpoint.signature.inputs, ParseTensors(e, where, "inputs"));
    SERVEKIT_ASSIGN_OR_RETURN(endpoint.signature.outputs, ParseTensors(e, where, "outputs"));
    SERVEKIT_ASSIGN_OR_RETURN(endpoint.stochastic, Reader::Bool(e, where, "stochastic"));
    SERVEKIT_ASSIGN_OR_RETURN(endpoint.stateful, Reader::Bool(e, where, "stateful"));
    for (size_t k = 0; k < endpoint.signature.outputs.size(); ++k) {
      const json& out = e["outputs"][k];
      SERVEKIT_ASSIGN_OR_RETURN(bool stochastic,
                                Reader::Bool(out, Reader::Index(Reader::Join(where, "outputs"), k), "stochastic"));
      if (stochastic) endpoint.stochastic_outputs.push_back(endpoint.signature.outputs[k].name);
    }
    SERVEKIT_ASSIGN_OR_RETURN(endpoint.dims, ParseDims(e, where, endpoint.signature));
    if (!endpoint.stochastic_outputs.empty()) endpoint.stochastic = true;
    // A stochastic endpoint that names no stochastic output: any output may vary.
    if (endpoint.stochastic && endpoint.stochastic_outputs.empty()) {
      for (const auto& out : endpoint.signature.outputs) endpoint.stochastic_outputs.push_back(out.name);
    }
    m.endpoints.push_back(std::move(endpoint));
  }

  SERVEKIT_ASSIGN_OR_RETURN(const json* tolerances, Reader::Object(root, "", "tolerances", false));
  if (tolerances != nullptr) {
    for (auto it = tolerances->begin(); it != tolerances->end(); ++it) {
      const std::string where = Reader::Join("tolerances", it.key());
      auto dtype = DTypeFromName(it.key());
      if (!dtype) return Reader::Error(where, "names an unknown dtype");
      if (!it.value().is_object()) return Reader::Error(where, "must be an object {atol, rtol}");
      Tolerance t;
      for (const char* key : {"atol", "rtol"}) {
        SERVEKIT_ASSIGN_OR_RETURN(const json* v, Reader::Field(it.value(), where, key, false));
        if (v == nullptr) continue;
        if (!v->is_number() || v->get<double>() < 0) {
          return Reader::Error(Reader::Join(where, key), "must be a number >= 0");
        }
        (key[0] == 'a' ? t.atol : t.rtol) = v->get<double>();
      }
      m.tolerances[*dtype] = t;
    }
  }

  SERVEKIT_ASSIGN_OR_RETURN(const json* reference, Reader::Array(root, "", "reference", false));
  if (reference != nullptr) {
    for (size_t i = 0; i < reference->size(); ++i) {
      const json& r = (*reference)[i];
      const std::string where = Reader::Index("reference", i);
      if (!r.is_object()) return Reader::Error(where, "must be an object");
      ReferenceCase c;
      SERVEKIT_ASSIGN_OR_RETURN(c.endpoint, Reader::String(r, where, "endpoint"));
      if (m.FindEndpoint(c.endpoint) == nullptr) {
        return Reader::Error(Reader::Join(where, "endpoint"), "names unknown endpoint '" + c.endpoint + "'");
      }
      SERVEKIT_ASSIGN_OR_RETURN(const json* batch, Reader::Field(r, where, "batch", false));
      if (batch != nullptr) {
        if (!batch->is_number_integer()) return Reader::Error(Reader::Join(where, "batch"), "must be an integer");
        c.batch = batch->get<int64_t>();
      }
      SERVEKIT_ASSIGN_OR_RETURN(c.inputs, ParseStringMap(r, where, "inputs", true));
      SERVEKIT_ASSIGN_OR_RETURN(c.outputs, ParseStringMap(r, where, "outputs", true));
      m.reference.push_back(std::move(c));
    }
  }
  return m;
}

}  // namespace

bool ManifestEndpoint::HasFormat(ModelFormat format) const {
  for (auto f : formats) {
    if (f == format) return true;
  }
  return false;
}

bool ManifestEndpoint::IsStochasticOutput(const std::string& output) const {
  for (const auto& name : stochastic_outputs) {
    if (name == output) return true;
  }
  return false;
}

const DimRecord* ManifestEndpoint::FindDim(const std::string& symbol) const {
  for (const auto& d : dims) {
    if (d.symbol == symbol) return &d;
  }
  return nullptr;
}

const ManifestArtifact* Manifest::FindArtifact(ModelFormat format) const {
  for (const auto& a : artifacts) {
    if (a.format == format) return &a;
  }
  return nullptr;
}

const ManifestEndpoint* Manifest::FindEndpoint(const std::string& name) const {
  for (const auto& e : endpoints) {
    if (e.signature.name == name) return &e;
  }
  return nullptr;
}

Tolerance DefaultTolerance(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return {1e-5, 0.0};
    case DType::kFloat64: return {1e-7, 0.0};
    case DType::kFloat16:
    case DType::kBFloat16: return {1e-2, 1e-2};
    default: return {0.0, 0.0};
  }
}

Tolerance Manifest::ToleranceFor(DType dtype) const {
  auto it = tolerances.find(dtype);
  return it != tolerances.end() ? it->second : DefaultTolerance(dtype);
}

std::string Manifest::Resolve(const std::string& relative) const { return JoinPath(base_dir, relative); }

StatusOr<Manifest> ParseManifest(std::string_view json_text, const std::string& base_dir) {
  json root = json::parse(json_text.begin(), json_text.end(), nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return InvalidArgument("manifest is not valid JSON");
  try {
    return ParseJson(root, base_dir);
  } catch (const std::exception& e) {  // e.g. an integer out of range
    return InvalidArgument(std::string("manifest could not be read: ") + e.what());
  }
}

StatusOr<Manifest> ReadManifest(const std::string& path) {
  SERVEKIT_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  auto manifest = ParseManifest(text, DirName(path));
  if (!manifest.ok()) return manifest.status().WithContext(path);
  return manifest;
}

nlohmann::json SignatureToJson(const Signature& signature) {
  auto tensors = [](const std::vector<TensorSpec>& specs) {
    json list = json::array();
    for (const auto& s : specs) {
      json shape = json::array();
      for (const auto& d : s.dims) {
        if (d.is_static()) {
          shape.push_back(d.size);
        } else if (!d.symbol.empty()) {
          shape.push_back(d.symbol);
        } else {
          shape.push_back(nullptr);
        }
      }
      json t = {{"name", s.name}, {"dtype", DTypeName(s.dtype)}, {"shape", s.unknown_rank ? json(nullptr) : shape}};
      list.push_back(std::move(t));
    }
    return list;
  };
  return json{{"name", signature.name},
              {"method_name", signature.method_name},
              {"inputs", tensors(signature.inputs)},
              {"outputs", tensors(signature.outputs)}};
}

}  // namespace servekit
