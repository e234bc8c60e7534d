// Validation against the manifest: the fixture passes; a deliberately wrong manifest
// and tampered files are reported precisely, every mismatch at once.
#include "cc/validate.h"

#include <cctype>
#include <map>

#include "cc/file_util.h"
#include "cc/loader.h"
#include "cc/parity.h"
#include "cc/saved_model_proto.h"
#include "cc/verify.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cc/test_util.h"

namespace servekit {
namespace {


std::vector<Signature> SignaturesOf(const std::string& path) {
  auto m = LoadModel(path);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return m.ok() ? (*m)->signatures() : std::vector<Signature>{};
}

TEST(ValidateTest, FixtureSignaturesMatch) {
  auto manifest = ReadManifest(testing::FixturePath("manifest.json"));
  ASSERT_TRUE(manifest.ok());
  EXPECT_TRUE(CompareSignatures(*manifest, ModelFormat::kTfSavedModel, SignaturesOf(testing::FixturePath("saved_model")))
                  .empty());
  EXPECT_TRUE(CompareSignatures(*manifest, ModelFormat::kOnnx, SignaturesOf(testing::FixturePath("model.onnx"))).empty());
  for (const auto& a : manifest->artifacts) EXPECT_TRUE(VerifyDigests(*manifest, a).empty());
}

// The fixture's manifest with deliberate mistakes.
Manifest WrongManifest() {
  auto text = ReadFile(testing::FixturePath("manifest.json"));
  EXPECT_TRUE(text.ok());
  auto j = nlohmann::json::parse(*text);
  auto& serving = j["endpoints"][0];
  serving["outputs"][0]["dtype"] = "float64";                  // logits: wrong dtype
  serving["inputs"][0]["shape"] = {"N", 4};                    // features: wrong symbol, wrong dim
  j["endpoints"][1]["inputs"][1]["shape"] = {"batch", 4, 1};   // tokens ids: wrong rank
  j["endpoints"][1]["outputs"][1]["name"] = "uppercase";       // tokens: renamed output
  j["endpoints"][2]["formats"] = {"onnx"};                     // divide moved to onnx
  j["endpoints"][2]["method_name"] = "tensorflow/serving/classify";
  auto m = ParseManifest(j.dump(), testing::FixtureDir());
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return *m;
}

TEST(ValidateTest, WrongManifestSavedModel) {
  const auto errors =
      CompareSignatures(WrongManifest(), ModelFormat::kTfSavedModel, SignaturesOf(testing::FixturePath("saved_model")));
  const std::vector<std::string> expected = {
      "endpoint 'serving_default' input 'features': dim 1 expected 4, found 3",
      "endpoint 'serving_default' output 'logits': dtype expected float64, found float32",
      "endpoint 'tokens' input 'ids': rank expected 3 (int64[batch,4,1]), found 2 (int64[?,4])",
      "endpoint 'tokens' output 'uppercase': missing from the tf_saved_model artifact (expected string[batch])",
      "endpoint 'tokens' output 'upper': found in the tf_saved_model artifact (string[?]) but not in the manifest",
      "endpoint 'divide': found in the tf_saved_model artifact but the manifest does not list it for that format",
  };
  EXPECT_EQ(errors, expected);
}

TEST(ValidateTest, WrongManifestOnnx) {
  const auto errors =
      CompareSignatures(WrongManifest(), ModelFormat::kOnnx, SignaturesOf(testing::FixturePath("model.onnx")));
  const std::vector<std::string> expected = {
      "the manifest lists 2 endpoints for onnx; an ONNX model has exactly one (serving_default)",
      "endpoint 'serving_default' input 'features': dim 0 expected symbolic name 'N', found 'batch'",
      "endpoint 'serving_default' input 'features': dim 1 expected 4, found 3",
      "endpoint 'serving_default' output 'logits': dtype expected float64, found float32",
      "endpoint 'divide': missing from the onnx artifact (it has: 'serving_default')",
  };
  EXPECT_EQ(errors, expected);
}

TEST(ValidateTest, TamperedFilesAreReported) {
  const std::string dir = testing::CopyFixture("tampered");
  ASSERT_TRUE(WriteFile(dir + "/saved_model/variables/variables.index", "changed").ok());
  ASSERT_TRUE(WriteFile(dir + "/saved_model/extra.txt", "not listed").ok());
  std::remove((dir + "/saved_model/fingerprint.pb").c_str());
  auto manifest = ReadManifest(dir + "/manifest.json");
  ASSERT_TRUE(manifest.ok());
  const auto errors = VerifyDigests(*manifest, *manifest->FindArtifact(ModelFormat::kTfSavedModel));
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_EQ(errors[0].rfind("artifact 'tf_saved_model' file 'fingerprint.pb': missing", 0), 0u) << errors[0];
  EXPECT_EQ(errors[1].rfind("artifact 'tf_saved_model' file 'variables/variables.index': sha256 expected ", 0), 0u)
      << errors[1];
  EXPECT_NE(errors[1].find(", found d67e2e94"), std::string::npos) << errors[1];  // sha256("changed")
  EXPECT_EQ(errors[2], "artifact 'tf_saved_model' file 'extra.txt': on disk but not listed in the manifest");
}

TEST(VerifyTest, FixturePasses) {
  auto report = VerifyExport(testing::FixturePath("manifest.json"));
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->passed()) << report->ToJson().dump(2);
  ASSERT_EQ(report->artifacts.size(), 2u);
  EXPECT_EQ(report->artifacts[0].parity.size(), 4u);  // every case serves the SavedModel
  EXPECT_EQ(report->artifacts[1].parity.size(), 2u);  // the serving_default cases serve ONNX
  EXPECT_EQ(report->cross_parity.size(), 2u);
  EXPECT_TRUE(report->Failures().empty());
}

TEST(VerifyTest, OneFormat) {
  VerifyOptions options;
  options.format = ModelFormat::kOnnx;
  auto report = VerifyExport(testing::FixturePath("manifest.json"), options);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->artifacts.size(), 1u);
  EXPECT_TRUE(report->cross_parity.empty());
  EXPECT_TRUE(report->passed());
}

TEST(VerifyTest, WrongReferenceAndBrokenArtifactAreReported) {
  const std::string dir = testing::CopyFixture("wrong_reference");
  // A reference output that disagrees with the models in one element.
  auto j = nlohmann::json::parse(*ReadFile(dir + "/manifest.json"));
  j["tolerances"]["float32"]["atol"] = 1e-6;
  ASSERT_TRUE(WriteFile(dir + "/manifest.json", j.dump()).ok());
  auto logits = ReadFile(dir + "/reference/serving_default.b1.out.logits.npy");
  std::string bytes = *logits;
  bytes[bytes.size() - 1] ^= 0x40;  // the last float's top byte
  ASSERT_TRUE(WriteFile(dir + "/reference/serving_default.b1.out.logits.npy", bytes).ok());
  ASSERT_TRUE(WriteFile(dir + "/model.onnx", "broken").ok());
  auto report = VerifyExport(dir + "/manifest.json");
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->passed());
  EXPECT_TRUE(report->load_failed());
  const auto failures = report->Failures();
  std::string all;
  for (const auto& f : failures) all += f + "\n";
  EXPECT_NE(all.find("tf_saved_model: tf_saved_model reference serving_default b1 logits max_abs="), std::string::npos)
      << all;
  EXPECT_NE(all.find("1 of 2 elements differ beyond tolerance; first: element [0,1]"), std::string::npos) << all;
  EXPECT_NE(all.find("onnx: artifact 'onnx' file 'model.onnx': sha256 expected"), std::string::npos) << all;
  EXPECT_NE(all.find("onnx: load failed: "), std::string::npos) << all;
  EXPECT_EQ(all.find("serving_default b4"), std::string::npos) << "only the broken case fails:\n" << all;
}

TEST(VerifyTest, ManifestErrorsAreStatus) {
  EXPECT_EQ(VerifyExport("/nonexistent/manifest.json").status().code(), StatusCode::kNotFound);
  const std::string dir = testing::ScratchDir("onnx_only");
  ASSERT_TRUE(WriteFile(dir + "/manifest.json", R"({"servekit_manifest": 1, "model": "m", "artifacts": [],
      "endpoints": []})").ok());
  VerifyOptions options;
  options.format = ModelFormat::kOnnx;
  auto report = VerifyExport(dir + "/manifest.json", options);
  EXPECT_EQ(report.status().code(), StatusCode::kNotFound);
  EXPECT_NE(report.status().message().find("has no onnx artifact"), std::string::npos);
}

// ---- Dims shared by several tensors under one name ----------------------------

std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
std::string Bytes(int field, const std::string& payload) { return Varint(field << 3 | 2) + Varint(payload.size()) + payload; }
std::string Int(int field, uint64_t v) { return Varint(field << 3) + Varint(v); }

// A TensorInfo of `dtype` (TF_DataType) with one TensorShapeProto.Dim per entry of
// `dims`: a number is a static size, a string a dynamic dim with that name ("" unnamed).
std::string TensorInfo(const std::string& tensor, int dtype, const std::vector<std::string>& dims) {
  std::string shape;
  for (const auto& d : dims) {
    const bool is_static = !d.empty() && std::isdigit(static_cast<unsigned char>(d[0]));
    shape += Bytes(2, is_static ? Int(1, std::stoll(d)) : Int(1, static_cast<uint64_t>(-1)) + (d.empty() ? "" : Bytes(2, d)));
  }
  return Bytes(1, tensor) + Int(2, dtype) + Bytes(3, shape);
}

// saved_model.pb bytes, as the wire reader sees them: serving_default takes token_ids
// and padding_mask int32[batch, <sequence>] and returns hidden float32[batch, <sequence>, 4],
// the second dim of each named as given (servekit writes "sequence"; TensorFlow alone
// writes no names).
std::string SharedDimsSavedModel(const std::string& ids_dim, const std::string& mask_dim, const std::string& out_dim,
                                 const std::string& batch = "batch") {
  auto entry = [](const std::string& key, const std::string& value) { return Bytes(1, key) + Bytes(2, value); };
  const std::string signature = Bytes(1, entry("token_ids", TensorInfo("serving_default_token_ids:0", 3, {batch, ids_dim}))) +
                                Bytes(1, entry("padding_mask", TensorInfo("serving_default_padding_mask:0", 3, {batch, mask_dim}))) +
                                Bytes(2, entry("hidden", TensorInfo("StatefulPartitionedCall:0", 1, {batch, out_dim, "4"}))) +
                                Bytes(3, "tensorflow/serving/predict");
  const std::string meta = Bytes(1, Bytes(4, "serve")) + Bytes(5, entry("serving_default", signature));
  return Int(1, 1) + Bytes(2, meta);
}

std::vector<Signature> SignaturesOfBytes(const std::string& bytes) {
  auto saved_model = ParseSavedModel(bytes);
  EXPECT_TRUE(saved_model.ok()) << saved_model.status().ToString();
  if (!saved_model.ok()) return {};
  auto signatures = SignaturesFromMetaGraph(saved_model->meta_graphs[0]);
  EXPECT_TRUE(signatures.ok()) << signatures.status().ToString();
  return signatures.ok() ? *signatures : std::vector<Signature>{};
}

// The manifest servekit writes for such an export (docs/manifest.md).
nlohmann::json SharedDimsManifestJson(bool dim_names) {
  auto tensor = [](const char* name, const char* dtype, nlohmann::json shape) {
    return nlohmann::json{{"name", name}, {"dtype", dtype}, {"shape", shape}};
  };
  nlohmann::json artifact = {{"format", "tf_saved_model"}, {"path", "saved_model"}, {"files", nlohmann::json::object()}};
  if (dim_names) artifact["dim_names"] = true;
  return {{"servekit_manifest", 1},
          {"model", "decoder"},
          {"artifacts", {artifact}},
          {"endpoints",
           {{{"name", "serving_default"},
             {"formats", {"tf_saved_model"}},
             {"inputs", {tensor("token_ids", "int32", {"batch", "sequence"}),
                         tensor("padding_mask", "int32", {"batch", "sequence"})}},
             {"outputs", {tensor("hidden", "float32", {"batch", "sequence", 4})}},
             {"dims", {{"batch", {{"verified", {1, 2, 7}}}},
                       {"sequence", {{"verified", {1, 5, 11}}, {"window", 8}, {"max", 16}}}}}}}}};
}

Manifest SharedDimsManifest(bool dim_names) {
  auto m = ParseManifest(SharedDimsManifestJson(dim_names).dump(), "/tmp");
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return *m;
}

TEST(SharedDimsTest, ManifestRecordsTheDimsAndTheirSizes) {
  const Manifest m = SharedDimsManifest(true);
  EXPECT_TRUE(m.artifacts[0].dim_names);
  const ManifestEndpoint& e = m.endpoints[0];
  ASSERT_EQ(e.dims.size(), 2u);
  const DimRecord* sequence = e.FindDim("sequence");
  ASSERT_NE(sequence, nullptr);
  EXPECT_EQ(sequence->verified, (std::vector<int64_t>{1, 5, 11}));
  EXPECT_EQ(sequence->window, 8);
  EXPECT_EQ(sequence->max, 16);
  EXPECT_EQ(e.FindDim("batch")->verified, (std::vector<int64_t>{1, 2, 7}));
  EXPECT_FALSE(e.FindDim("batch")->window.has_value());
  // Old manifests: no "dims", no "dim_names".
  auto old = SharedDimsManifestJson(false);
  old["endpoints"][0].erase("dims");
  auto parsed = ParseManifest(old.dump(), "/tmp");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_TRUE(parsed->endpoints[0].dims.empty());
  EXPECT_FALSE(parsed->artifacts[0].dim_names);
  // A record for a dim no tensor has is an error naming the field.
  auto wrong = SharedDimsManifestJson(true);
  wrong["endpoints"][0]["dims"]["length"] = {{"verified", {3}}};
  auto refused = ParseManifest(wrong.dump(), "/tmp");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("endpoints[0].dims.length' names no dynamic dim"), std::string::npos)
      << refused.status().message();
  wrong = SharedDimsManifestJson(true);
  wrong["endpoints"][0]["dims"]["sequence"]["verified"] = {1, -5};
  EXPECT_FALSE(ParseManifest(wrong.dump(), "/tmp").ok());
}

TEST(SharedDimsTest, SavedModelNamesAreCheckedAgainstTheManifest) {
  const Manifest m = SharedDimsManifest(true);
  // The names servekit writes into the signature_def: they match.
  EXPECT_EQ(CompareSignatures(m, ModelFormat::kTfSavedModel,
                              SignaturesOfBytes(SharedDimsSavedModel("sequence", "sequence", "sequence"))),
            std::vector<std::string>{});
  // One symbol per input (what servekit wrote before it found shared dims) and an
  // unnamed output dim: each is reported.
  const std::vector<std::string> expected = {
      "endpoint 'serving_default' input 'token_ids': dim 1 expected symbolic name 'sequence', found 'token_ids_1'",
      "endpoint 'serving_default' input 'padding_mask': dim 1 expected symbolic name 'sequence', found 'padding_mask_1'",
      "endpoint 'serving_default' output 'hidden': dim 1 expected symbolic name 'sequence', found no name",
  };
  EXPECT_EQ(CompareSignatures(m, ModelFormat::kTfSavedModel,
                              SignaturesOfBytes(SharedDimsSavedModel("token_ids_1", "padding_mask_1", ""))),
            expected);
  // A SavedModel whose manifest does not say it names its dims (older exports): only
  // dynamic against static is checked.
  EXPECT_EQ(CompareSignatures(SharedDimsManifest(false), ModelFormat::kTfSavedModel,
                              SignaturesOfBytes(SharedDimsSavedModel("", "", "", ""))),
            std::vector<std::string>{});
}

TEST(SharedDimsTest, OneSizePerNameInACall) {
  const Manifest m = SharedDimsManifest(true);
  const Signature& s = m.endpoints[0].signature;
  const std::vector<NamedTensor> inputs = {{"token_ids", testing::Int64s({2, 5}, std::vector<int64_t>(10, 1))},
                                           {"padding_mask", testing::Int64s({2, 5}, std::vector<int64_t>(10, 1))}};
  std::vector<NamedTensor> outputs = {{"hidden", testing::Floats({2, 5, 4}, std::vector<float>(40, 0.5f))}};
  std::map<std::string, int64_t> sizes;
  EXPECT_TRUE(CheckDimBindings(s, inputs, &outputs, &sizes).empty());
  EXPECT_EQ(sizes, (std::map<std::string, int64_t>{{"batch", 2}, {"sequence", 5}}));
  outputs = {{"hidden", testing::Floats({2, 6, 4}, std::vector<float>(48, 0.5f))}};
  EXPECT_EQ(CheckDimBindings(s, inputs, &outputs),
            std::vector<std::string>{"dim 'sequence': output 'hidden' dim 1 is 6, but input 'token_ids' dim 1 is 5"});
  const std::vector<NamedTensor> disagreeing = {
      {"token_ids", testing::Int64s({2, 5}, std::vector<int64_t>(10, 1))},
      {"padding_mask", testing::Int64s({3, 4}, std::vector<int64_t>(12, 1))}};
  EXPECT_EQ(CheckDimBindings(s, disagreeing, nullptr),
            (std::vector<std::string>{"dim 'batch': input 'padding_mask' dim 0 is 3, but input 'token_ids' dim 0 is 2",
                                      "dim 'sequence': input 'padding_mask' dim 1 is 4, but input 'token_ids' dim 1 is 5"}));
}

TEST(SharedDimsTest, VerifiedSizesMustBeTheReferenceCases) {
  const std::string dir = testing::CopyFixture("verified_dims");
  auto j = nlohmann::json::parse(*ReadFile(dir + "/manifest.json"));
  ASSERT_EQ(j["endpoints"][0]["name"], "serving_default");
  ASSERT_EQ(j["endpoints"][0]["inputs"][0]["shape"][0], "batch");
  j["endpoints"][0]["dims"] = {{"batch", {{"verified", {1, 4}}}}};  // the fixture's cases: b1, b4
  ASSERT_TRUE(WriteFile(dir + "/manifest.json", j.dump()).ok());
  auto report = VerifyExport(dir + "/manifest.json");
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->passed()) << report->ToJson().dump(2);
  EXPECT_NE(report->ToText().find("dims: batch 1, 4"), std::string::npos) << report->ToText();

  j["endpoints"][0]["dims"] = {{"batch", {{"verified", {1, 4, 7}}}}};
  ASSERT_TRUE(WriteFile(dir + "/manifest.json", j.dump()).ok());
  report = VerifyExport(dir + "/manifest.json");
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->passed());
  EXPECT_EQ(report->dim_errors,
            std::vector<std::string>{"endpoint 'serving_default' dim 'batch': the manifest says it was verified at "
                                     "[1, 4, 7], its reference cases give it [1, 4]"});
  EXPECT_EQ(report->Failures().front().rfind("dims: endpoint 'serving_default' dim 'batch'", 0), 0u);
}

}  // namespace
}  // namespace servekit
