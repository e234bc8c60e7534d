// Stochastic and stateful endpoints (docs/manifest.md) on a real export whose
// references come from the source tf.Module (fixture/random/): both directions of
// each check: a random artifact stays random, a deterministic one marked stochastic
// fails; stateful references pass in manifest order on a fresh model and fail out of
// order or on a model whose state has moved on.
#include <cmath>

#include "cc/file_util.h"
#include "cc/loader.h"
#include "cc/manifest.h"
#include "cc/parity.h"
#include "cc/verify.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/cc/test_util.h"

namespace servekit {
namespace {

using testing::Floats;

std::string RandomDir() { return testing::FixturePath("random"); }

nlohmann::json ManifestJson(const std::string& dir) {
  auto text = ReadFile(dir + "/manifest.json");
  EXPECT_TRUE(text.ok()) << text.status().ToString();
  return nlohmann::json::parse(*text);
}

Manifest Parse(const nlohmann::json& j, const std::string& dir) {
  auto m = ParseManifest(j.dump(), dir);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return m.ok() ? *m : Manifest{};
}

bool Contains(const std::vector<std::string>& lines, const std::string& needle) {
  for (const auto& line : lines) {
    if (line.find(needle) != std::string::npos) return true;
  }
  return false;
}

TEST(StochasticStatefulManifestTest, FlagsAreParsedAndDefaultToFalse) {
  auto m = ReadManifest(RandomDir() + "/manifest.json");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const ManifestEndpoint* serving = m->FindEndpoint("serving_default");
  const ManifestEndpoint* counter = m->FindEndpoint("counter");
  ASSERT_NE(serving, nullptr);
  ASSERT_NE(counter, nullptr);
  EXPECT_TRUE(serving->stochastic);
  EXPECT_FALSE(serving->stateful);
  EXPECT_EQ(serving->stochastic_outputs, std::vector<std::string>{"noisy"});
  EXPECT_TRUE(serving->IsStochasticOutput("noisy"));
  EXPECT_FALSE(serving->IsStochasticOutput("doubled"));
  EXPECT_TRUE(counter->stateful);
  EXPECT_FALSE(counter->stochastic);

  auto plain = ReadManifest(testing::FixturePath("manifest.json"));
  ASSERT_TRUE(plain.ok());
  for (const auto& e : plain->endpoints) {
    EXPECT_FALSE(e.stochastic || e.stateful) << e.signature.name;
    EXPECT_TRUE(e.stochastic_outputs.empty());
  }
}

TEST(StochasticStatefulManifestTest, MarksAreCheckedAndImplied) {
  auto j = ManifestJson(RandomDir());
  j["endpoints"][1]["stateful"] = "yes";
  auto m = ParseManifest(j.dump(), RandomDir());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(), "manifest field 'endpoints[1].stateful' must be true or false");

  j = ManifestJson(RandomDir());
  j["endpoints"][0]["outputs"][1]["stochastic"] = 1;
  m = ParseManifest(j.dump(), RandomDir());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(), "manifest field 'endpoints[0].outputs[1].stochastic' must be true or false");

  // A marked output makes its endpoint stochastic; a stochastic endpoint that marks
  // no output has every output stochastic.
  j = ManifestJson(RandomDir());
  j["endpoints"][0].erase("stochastic");
  EXPECT_TRUE(Parse(j, RandomDir()).FindEndpoint("serving_default")->stochastic);
  j["endpoints"][0]["stochastic"] = true;
  j["endpoints"][0]["outputs"][0].erase("stochastic");
  EXPECT_EQ(Parse(j, RandomDir()).FindEndpoint("serving_default")->stochastic_outputs,
            (std::vector<std::string>{"noisy", "doubled"}));
}

TEST(StochasticOutputTest, DtypeShapeAndFiniteValuesOnly) {
  const Tensor expected = Floats({2}, {0.25f, 0.5f});
  EXPECT_TRUE(CheckStochasticOutput("y", expected, Floats({2}, {7.0f, -3.0f})).passed);
  auto r = CheckStochasticOutput("y", expected, Floats({2}, {1.0f, NAN}));
  EXPECT_FALSE(r.passed);
  EXPECT_EQ(r.message, "1 of 2 elements are not finite; first: element [1] is nan");
  r = CheckStochasticOutput("y", expected, Floats({1, 2}, {1.0f, 2.0f}));
  EXPECT_FALSE(r.passed);
  EXPECT_EQ(r.message, "shape expected [2], found [1,2]");
  EXPECT_EQ(r.check, OutputCheck::kStochastic);
}

// The random export passes as a whole: references (the stochastic output checked
// for shape and finiteness, the deterministic one for values), stays random in both
// formats, stateful cases in order, and the cross-format report says what it
// could not compare.
TEST(StochasticStatefulVerifyTest, RandomExportPasses) {
  auto report = VerifyExport(RandomDir() + "/manifest.json");
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_TRUE(report->passed()) << report->ToText();
  ASSERT_EQ(report->artifacts.size(), 2u);
  for (const auto& a : report->artifacts) {
    ASSERT_EQ(a.stays_random.size(), 1u) << FormatName(a.format);
    EXPECT_TRUE(a.stays_random[0].passed) << a.stays_random[0].message;
    EXPECT_EQ(a.stays_random[0].message, "'noisy' changed between two runs");
    for (const auto& c : a.parity) {
      for (const auto& o : c.outputs) {
        EXPECT_EQ(o.check, o.name == "noisy" ? OutputCheck::kStochastic : OutputCheck::kValues) << o.name;
      }
    }
  }
  // tf_saved_model: the counter's three calls, first; then serving_default.
  const auto& saved = report->artifacts[0].parity;
  ASSERT_EQ(saved.size(), 4u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(saved[i].endpoint, "counter");
  EXPECT_EQ(saved[3].endpoint, "serving_default");

  ASSERT_EQ(report->cross_parity.size(), 1u);  // counter is SavedModel only
  const CaseParity& cross = report->cross_parity[0];
  ASSERT_EQ(cross.outputs.size(), 2u);
  EXPECT_EQ(cross.outputs[0].check, OutputCheck::kNotComparable);
  EXPECT_EQ(cross.outputs[1].check, OutputCheck::kValues);
  EXPECT_TRUE(cross.outputs[1].passed);

  const std::string text = report->ToText();
  EXPECT_NE(text.find("  serving_default  tf_saved_model,onnx  stochastic (noisy)\n"), std::string::npos) << text;
  EXPECT_NE(text.find("  counter          tf_saved_model       stateful\n"), std::string::npos) << text;
  EXPECT_NE(text.find("N/A  tf_saved_model vs onnx serving_default b2 noisy: not comparable (stochastic output)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("PASS onnx stays random serving_default b2: 'noisy' changed between two runs"),
            std::string::npos)
      << text;
  const auto json = report->ToJson();
  EXPECT_EQ(json["endpoints"][0]["stochastic"], true);
  EXPECT_EQ(json["endpoints"][1]["stateful"], true);
  EXPECT_EQ(json["artifacts"][1]["stays_random"][0]["passed"], true);
}

// A deterministic artifact whose manifest says it is stochastic fails "stays random".
TEST(StochasticStatefulVerifyTest, DeterministicArtifactMarkedStochasticFails) {
  auto j = ManifestJson(testing::FixtureDir());
  j["endpoints"][0]["outputs"][0]["stochastic"] = true;  // serving_default logits
  auto report = VerifyExport(Parse(j, testing::FixtureDir()), "marked.json");
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_FALSE(report->passed());
  const auto failures = report->Failures();
  for (const char* format : {"tf_saved_model", "onnx"}) {
    EXPECT_TRUE(Contains(failures, std::string(format) + ": " + format +
                                       " stays random serving_default b1: two runs gave identical 'logits': the "
                                       "artifact is deterministic, but the manifest says the endpoint is stochastic"))
        << ::testing::PrintToString(failures);
  }
  EXPECT_EQ(failures.size(), 2u) << ::testing::PrintToString(failures);
}

// A stochastic output is never compared with the reference: a reference of the
// right shape but other values still passes (the stays-random check carries the
// burden of proof).
TEST(StochasticStatefulVerifyTest, StochasticOutputValuesAreNotCompared) {
  auto m = ReadManifest(RandomDir() + "/manifest.json");
  ASSERT_TRUE(m.ok());
  auto model = LoadModel(RandomDir() + "/model.onnx");
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const auto parity = CheckReferenceParity(**model, *m);
  ASSERT_EQ(parity.size(), 1u);
  EXPECT_TRUE(parity[0].passed) << ::testing::PrintToString(DescribeParity(parity[0]));
  const auto lines = DescribeParity(parity[0]);
  EXPECT_TRUE(Contains(lines, "PASS onnx reference serving_default b2 noisy stochastic: dtype and shape as expected, "
                              "values finite (not compared)"))
      << ::testing::PrintToString(lines);
  EXPECT_TRUE(Contains(lines, "PASS onnx reference serving_default b2 doubled max_abs=0 max_rel=0"));
}

// Stateful references are successive calls from the export-time state: out of
// manifest order they fail, and so they do on a model already called.
TEST(StochasticStatefulVerifyTest, StatefulReferencesOutOfOrderFail) {
  auto j = ManifestJson(RandomDir());
  auto& reference = j["reference"];
  std::swap(reference[1], reference[3]);  // counter calls 0,1,2 -> 2,1,0
  auto report = VerifyExport(Parse(j, RandomDir()), "reordered.json", VerifyOptions{ModelFormat::kTfSavedModel});
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_FALSE(report->passed());
  const auto failures = report->Failures();
  EXPECT_TRUE(Contains(failures, "tf_saved_model reference counter b2 call 1 count max_abs=2 max_rel=0.666667: 1 of 1 "
                                 "elements differ beyond tolerance; first: element []: expected 3, found 1"))
      << ::testing::PrintToString(failures);

  auto m = ReadManifest(RandomDir() + "/manifest.json");
  ASSERT_TRUE(m.ok());
  auto fresh = LoadModel(RandomDir() + "/saved_model");
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  for (const auto& c : CheckReferenceParity(**fresh, *m)) EXPECT_TRUE(c.passed) << c.label;
  // The same model again: its counter has moved on from the export-time state.
  int failed = 0;
  for (const auto& c : CheckReferenceParity(**fresh, *m)) failed += c.endpoint == "counter" && !c.passed;
  EXPECT_EQ(failed, 3);
}

// Across formats a stateful endpoint is reported as not comparable, and not run.
TEST(StochasticStatefulVerifyTest, StatefulEndpointIsNotComparedAcrossFormats) {
  auto m = ReadManifest(RandomDir() + "/manifest.json");
  ASSERT_TRUE(m.ok());
  auto a = LoadModel(RandomDir() + "/saved_model");
  auto b = LoadModel(RandomDir() + "/saved_model");
  ASSERT_TRUE(a.ok() && b.ok());
  const auto cross = CheckCrossParity(**a, **b, *m);  // both serve counter
  ASSERT_EQ(cross.size(), 4u);
  for (const auto& c : cross) {
    if (c.endpoint != "counter") continue;
    EXPECT_TRUE(c.passed);
    EXPECT_TRUE(c.outputs.empty());
    EXPECT_EQ(DescribeParity(c)[0].rfind("N/A  tf_saved_model vs tf_saved_model counter b2: not comparable (stateful "
                                         "endpoint: each call updates the artifact's variables)",
                                         0),
              0u);
  }
  // Nothing ran counter: a's first call still sees the export-time state.
  auto out = (*a)->Run("counter", {{"x", Floats({1}, {0.0f})}});
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  EXPECT_EQ((*out)[0].tensor.data_as<int64_t>()[0], 1);
}

}  // namespace
}  // namespace servekit
