// Validation against the manifest: the fixture passes; a deliberately wrong manifest
// and tampered files are reported precisely, every mismatch at once.
#include "cc/validate.h"

#include "cc/file_util.h"
#include "cc/loader.h"
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

}  // namespace
}  // namespace servekit
