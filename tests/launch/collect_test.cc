// `moa collect`: DomainBed's three selection methods on a small hand-computed set of records
// (training-domain validation, leave-one-domain-out, oracle), the cells' mean +/- standard
// error, the text, Markdown and LaTeX tables against hand-written text, and how a sweep
// directory with foreign, half-written or malformed files is read.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/files.h"
#include "launch/collect.h"
#include "tests/support/test_support.h"

namespace moa::launch {
namespace {

// A record of the three-environment dataset "Toy"; `in` and `out` are the accuracies of env0..2.
nlohmann::json Json(const std::string& method, std::vector<int64_t> test_envs, int64_t trial,
                    int64_t hparams, int64_t step, std::vector<double> in,
                    std::vector<double> out) {
  nlohmann::json r;
  r["args"] = {{"dataset", "Toy"},       {"method", method},    {"algorithm", "ERM"},
               {"test_envs", test_envs}, {"trial_seed", trial}, {"hparams_seed", hparams}};
  r["step"] = step;
  for (int i = 0; i < 3; ++i) {
    r["env" + std::to_string(i) + "_in_acc"] = in[i];
    r["env" + std::to_string(i) + "_out_acc"] = out[i];
  }
  return r;
}

SweepRecord Record(const std::string& method, std::vector<int64_t> test_envs, int64_t trial,
                   int64_t hparams, int64_t step, std::vector<double> in, std::vector<double> out) {
  auto r = ParseSweepRecord(Json(method, test_envs, trial, hparams, step, in, out));
  EXPECT_TRUE(r.ok()) << r.status();
  return *r;
}

// Trial 0, test env 0, lora: two draws with single-test-env runs and their pair runs.
//   draw 0: steps 0, 1, 2; training-domain validation (mean out of env1, env2) .7, .8, .8 ->
//           step 1 (earliest of the tie), test in .55. Last step: out0 .6, in0 .9.
//           LOO: in1 of run {0,1} .6 .7 .5, in2 of run {0,2} .6 .9 .5 -> means .6 .8 .5 ->
//           step 1, test .55.
//   draw 1: steps 0, 1; validation .9, .5 -> step 0, test .4. Last step: out0 .7, in0 .95.
//           LOO: in1 .7 .9, in2 only at step 0: .7 -> step 0 (.7), step 1 has no value; test .4.
// Sweep: validation picks draw 1 (.9 > .8) -> .4; LOO draw 0 (.8 > .7) -> .55; oracle draw 1
// (.7 > .6) -> .95 (draw 0's step 0 has out0 .99, but the oracle reads only the last step).
// Trial 1, test env 0, lora: one step per draw, no pair runs.
//   draw 0: validation mean(.5, .7) = .6, test .6; oracle out0 .5.
//   draw 1: validation mean(.8, .8) = .8, test .7; oracle out0 .45.
// -> validation .7, oracle .6, LOO nothing.
// Trial 0, moa: one draw, single test envs 0, 1, 2 with test in .8, .6, .7.
std::vector<SweepRecord> HandRecords() {
  const double x = 0.0;  // an accuracy no method reads
  return {
      Record("lora", {0}, 0, 0, 0, {.5, x, x}, {.99, .6, .8}),
      Record("lora", {0}, 0, 0, 1, {.55, x, x}, {x, .7, .9}),
      Record("lora", {0}, 0, 0, 2, {.9, x, x}, {.6, .8, .8}),
      Record("lora", {0, 1}, 0, 0, 0, {x, .6, x}, {x, x, x}),
      Record("lora", {0, 1}, 0, 0, 1, {x, .7, x}, {x, x, x}),
      Record("lora", {0, 1}, 0, 0, 2, {x, .5, x}, {x, x, x}),
      Record("lora", {0, 2}, 0, 0, 0, {x, x, .6}, {x, x, x}),
      Record("lora", {0, 2}, 0, 0, 1, {x, x, .9}, {x, x, x}),
      Record("lora", {0, 2}, 0, 0, 2, {x, x, .5}, {x, x, x}),
      Record("lora", {0}, 0, 1, 0, {.4, x, x}, {x, .9, .9}),
      Record("lora", {0}, 0, 1, 1, {.95, x, x}, {.7, .5, .5}),
      Record("lora", {0, 1}, 0, 1, 0, {x, .7, x}, {x, x, x}),
      Record("lora", {0, 1}, 0, 1, 1, {x, .9, x}, {x, x, x}),
      Record("lora", {0, 2}, 0, 1, 0, {x, x, .7}, {x, x, x}),
      Record("lora", {0}, 1, 0, 0, {.6, x, x}, {.5, .5, .7}),
      Record("lora", {0}, 1, 1, 0, {.7, x, x}, {.45, .8, .8}),
      Record("moa", {0}, 0, 0, 0, {.8, x, x}, {x, .5, .5}),
      Record("moa", {1}, 0, 0, 0, {x, .6, x}, {.5, .5, .5}),
      Record("moa", {2}, 0, 0, 0, {x, x, .7}, {.5, .5, .5}),
  };
}

// The records of one (trial, method, test env) group: every record naming the test env.
std::vector<SweepRecord> Group(int64_t trial, const std::string& method, int64_t test_env) {
  std::vector<SweepRecord> group;
  for (const SweepRecord& r : HandRecords()) {
    if (r.trial_seed != trial || r.method != method) continue;
    if (std::find(r.test_envs.begin(), r.test_envs.end(), test_env) != r.test_envs.end()) {
      group.push_back(r);
    }
  }
  return group;
}

std::vector<SweepRecord> RunOfDraw(const std::vector<SweepRecord>& group, int64_t hparams) {
  std::vector<SweepRecord> run;
  for (const SweepRecord& r : group) {
    if (r.hparams_seed == hparams) run.push_back(r);
  }
  return run;
}

TEST(CollectTest, RunAccuracyPerMethod) {
  const auto group = Group(0, "lora", 0);
  auto iid0 = SelectRun(SelectionMethod::kTrainingDomain, 0, RunOfDraw(group, 0));
  ASSERT_TRUE(iid0);
  EXPECT_DOUBLE_EQ(iid0->validation, 0.8);
  EXPECT_DOUBLE_EQ(iid0->test, 0.55);  // the earliest of the tied steps 1 and 2
  auto iid1 = SelectRun(SelectionMethod::kTrainingDomain, 0, RunOfDraw(group, 1));
  ASSERT_TRUE(iid1);
  EXPECT_DOUBLE_EQ(iid1->validation, 0.9);
  EXPECT_DOUBLE_EQ(iid1->test, 0.4);

  auto oracle0 = SelectRun(SelectionMethod::kOracle, 0, RunOfDraw(group, 0));
  ASSERT_TRUE(oracle0);
  EXPECT_DOUBLE_EQ(oracle0->validation, 0.6);  // the last step, not step 0's .99
  EXPECT_DOUBLE_EQ(oracle0->test, 0.9);

  auto loo0 = SelectRun(SelectionMethod::kLeaveOneOut, 0, RunOfDraw(group, 0));
  ASSERT_TRUE(loo0);
  EXPECT_DOUBLE_EQ(loo0->validation, 0.8);
  EXPECT_DOUBLE_EQ(loo0->test, 0.55);
  auto loo1 = SelectRun(SelectionMethod::kLeaveOneOut, 0, RunOfDraw(group, 1));
  ASSERT_TRUE(loo1);
  EXPECT_DOUBLE_EQ(loo1->validation, 0.7);  // step 1 lacks the {0, 2} run
  EXPECT_DOUBLE_EQ(loo1->test, 0.4);
}

TEST(CollectTest, SweepAccuracyPerMethod) {
  EXPECT_DOUBLE_EQ(*SelectSweep(SelectionMethod::kTrainingDomain, 0, Group(0, "lora", 0)), 0.4);
  EXPECT_DOUBLE_EQ(*SelectSweep(SelectionMethod::kLeaveOneOut, 0, Group(0, "lora", 0)), 0.55);
  EXPECT_DOUBLE_EQ(*SelectSweep(SelectionMethod::kOracle, 0, Group(0, "lora", 0)), 0.95);
  EXPECT_DOUBLE_EQ(*SelectSweep(SelectionMethod::kTrainingDomain, 0, Group(1, "lora", 0)), 0.7);
  EXPECT_DOUBLE_EQ(*SelectSweep(SelectionMethod::kOracle, 0, Group(1, "lora", 0)), 0.6);
  EXPECT_FALSE(SelectSweep(SelectionMethod::kLeaveOneOut, 0, Group(1, "lora", 0)));
  // Env 1's group holds only pair runs: no method has a value.
  for (SelectionMethod m : {SelectionMethod::kTrainingDomain, SelectionMethod::kLeaveOneOut,
                            SelectionMethod::kOracle}) {
    EXPECT_FALSE(SelectSweep(m, 1, Group(0, "lora", 1)));
  }
  EXPECT_FALSE(SelectSweep(SelectionMethod::kOracle, 0, {}));
}

// Two draws with the same validation score: the sweep takes the higher draw's run, whatever order
// the records come in. Test env 0; validation is the mean of out1 and out2 (.6 + .8 and .8 + .6)
// or, for the oracle, out0 (.5 both); the test accuracies (in0) differ: .3 for draw 0, .6 for 1.
TEST(CollectTest, TiesGoToTheHigherDraw) {
  const double x = 0.0;
  const SweepRecord draw0 = Record("lora", {0}, 2, 0, 0, {.3, x, x}, {.5, .6, .8});
  const SweepRecord draw1 = Record("lora", {0}, 2, 1, 0, {.6, x, x}, {.5, .8, .6});
  for (const std::vector<SweepRecord>& group :
       {std::vector<SweepRecord>{draw0, draw1}, std::vector<SweepRecord>{draw1, draw0}}) {
    EXPECT_DOUBLE_EQ(*SelectSweep(SelectionMethod::kTrainingDomain, 0, group), 0.6);
    EXPECT_DOUBLE_EQ(*SelectSweep(SelectionMethod::kOracle, 0, group), 0.6);
  }
}

TEST(CollectTest, LeaveOneOutNeedsEveryPairRun) {
  // Without the {0, 2} runs no step of trial 0 has a value.
  std::vector<SweepRecord> group;
  for (const SweepRecord& r : Group(0, "lora", 0)) {
    if (r.test_envs != std::vector<int64_t>{0, 2}) group.push_back(r);
  }
  EXPECT_FALSE(SelectSweep(SelectionMethod::kLeaveOneOut, 0, group));
}

TEST(CollectTest, MeanAndStandardError) {
  // .4 and .7: mean 55.0; population std .15, / sqrt(2) = 10.607.
  EXPECT_EQ(FormatMeanAndError({0.4, 0.7}, TableFormat::kText), "55.0 +/- 10.6");
  EXPECT_EQ(FormatMeanAndError({0.4, 0.7}, TableFormat::kLatex), "55.0 $\\pm$ 10.6");
  EXPECT_EQ(FormatMeanAndError({0.4, 0.7}, TableFormat::kMarkdown), "55.0 ± 10.6");
  // .9, .8, .6: mean 76.667; std sqrt(((.1333)^2 + (.0333)^2 + (.1667)^2) / 3) = .12472,
  // / sqrt(3) = .07201.
  EXPECT_EQ(FormatMeanAndError({0.9, 0.8, 0.6}, TableFormat::kText), "76.7 +/- 7.2");
  EXPECT_EQ(FormatMeanAndError({}, TableFormat::kText), "X");
}

// Hand-written: the values above; columns 20 wide (25 for averages), two spaces between them,
// and the space print() puts before the line end, as DomainBed's collect_results.
constexpr const char* kExpectedText = R"(Total records: 19

-------- Dataset: Toy, model selection method: training-domain validation set
Method                env0                  env1                  env2                  Avg                  
lora                  55.0 +/- 10.6         X                     X                     X                    
moa                   80.0 +/- 0.0          60.0 +/- 0.0          70.0 +/- 0.0          70.0                 

-------- Averages, model selection method: training-domain validation set
Method                     Toy                        Avg                       
lora                       55.0 +/- 10.6              55.0                      
moa                        70.0 +/- 0.0               70.0                      

-------- Dataset: Toy, model selection method: leave-one-domain-out cross-validation
Method                env0                  env1                  env2                  Avg                  
lora                  55.0 +/- 0.0          X                     X                     X                    
moa                   X                     X                     X                     X                    

-------- Averages, model selection method: leave-one-domain-out cross-validation
Method                     Toy                        Avg                       
lora                       55.0 +/- 0.0               55.0                      
moa                        X                          X                         

-------- Dataset: Toy, model selection method: test-domain validation set (oracle)
Method                env0                  env1                  env2                  Avg                  
lora                  77.5 +/- 12.4         X                     X                     X                    
moa                   80.0 +/- 0.0          60.0 +/- 0.0          70.0 +/- 0.0          70.0                 

-------- Averages, model selection method: test-domain validation set (oracle)
Method                     Toy                        Avg                       
lora                       77.5 +/- 12.4              77.5                      
moa                        70.0 +/- 0.0               70.0                      
)";

TEST(CollectTest, TextTables) {
  EXPECT_EQ(FormatResults(HandRecords(), TableFormat::kText), kExpectedText);
}

TEST(CollectTest, MarkdownTables) {
  const std::string markdown = FormatResults(HandRecords(), TableFormat::kMarkdown);
  const std::string iid =
      "## Model selection: training-domain validation set\n"
      "\n"
      "### Dataset: Toy\n"
      "\n"
      "| Method | env0 | env1 | env2 | Avg |\n"
      "|---|---:|---:|---:|---:|\n"
      "| lora | 55.0 ± 10.6 | X | X | X |\n"
      "| moa | 80.0 ± 0.0 | 60.0 ± 0.0 | 70.0 ± 0.0 | 70.0 |\n"
      "\n"
      "### Averages\n"
      "\n"
      "| Method | Toy | Avg |\n"
      "|---|---:|---:|\n"
      "| lora | 55.0 ± 10.6 | 55.0 |\n"
      "| moa | 70.0 ± 0.0 | 70.0 |\n";
  EXPECT_NE(markdown.find(iid), std::string::npos) << markdown;
  EXPECT_EQ(markdown.rfind("Total records: 19\n", 0), 0u);
  EXPECT_NE(markdown.find("| lora | 77.5 ± 12.4 | X | X | X |\n"), std::string::npos);
}

TEST(CollectTest, LatexDocument) {
  const std::string latex = FormatResults(HandRecords(), TableFormat::kLatex);
  EXPECT_EQ(latex.rfind("\\documentclass{article}\n\\usepackage{booktabs}\n"
                        "\\usepackage{adjustbox}\n\\begin{document}\n"
                        "\\section{Full DomainBed results}\n% Total records: 19\n",
                        0),
            0u)
      << latex;
  const std::string oracle =
      "\\subsection{Model selection: test-domain validation set (oracle)}\n"
      "\n"
      "\\subsubsection{Toy}\n"
      "\n"
      "\\begin{center}\n"
      "\\adjustbox{max width=\\textwidth}{%\n"
      "\\begin{tabular}{lcccc}\n"
      "\\toprule\n"
      "\\textbf{Method}      & \\textbf{env0}        & \\textbf{env1}        & "
      "\\textbf{env2}        & \\textbf{Avg}         \\\\\n"
      "\\midrule\n"
      "lora                 & 77.5 $\\pm$ 12.4      & X                    & X                    "
      "& "
      "X                    \\\\\n"
      "moa                  & 80.0 $\\pm$ 0.0       & 60.0 $\\pm$ 0.0       & 70.0 $\\pm$ 0.0      "
      " & "
      "70.0                 \\\\\n"
      "\\bottomrule\n"
      "\\end{tabular}}\n"
      "\\end{center}\n";
  EXPECT_NE(latex.find(oracle), std::string::npos) << latex;
  EXPECT_EQ(latex.substr(latex.size() - 15), "\\end{document}\n");
}

TEST(CollectTest, NumbersOfTheWrongKindAreRefusedNamingTheKey) {
  const double x = 0.0;
  // Integers beyond int64 (the first found by fuzz/collect_fuzzer), fractions and booleans where
  // integers belong, and booleans where accuracies belong.
  const std::vector<std::pair<std::string, nlohmann::json>> bad = {
      {"args.trial_seed", nlohmann::json::parse("99999999999999999999")},
      {"args.hparams_seed", 1e54},
      {"step", 2.5},
      {"step", true},
      {"args.test_envs", nlohmann::json::array({0.5})},
      {"env1_out_acc", false}};
  for (const auto& [key, value] : bad) {
    SCOPED_TRACE(key + " = " + value.dump());
    nlohmann::json record = Json("lora", {0}, 0, 0, 0, {.5, x, x}, {x, .6, .8});
    if (key.rfind("args.", 0) == 0) {
      record["args"][key.substr(5)] = value;
    } else {
      record[key] = value;
    }
    std::istringstream text(record.dump() + "\n");
    const auto records = ParseResultsJsonl(text, "r.jsonl");
    ASSERT_FALSE(records.ok());
    EXPECT_NE(records.status().message().find("r.jsonl line 1 " + key + " has the wrong type"),
              std::string::npos)
        << records.status();
  }
}

void WriteLines(const std::string& path, const std::vector<nlohmann::json>& records) {
  std::string text;
  for (const auto& r : records) text += r.dump() + "\n";
  ASSERT_TRUE(WriteFileAtomically(path, text).ok());
}

TEST(CollectTest, SweepDirectoryWithBadInput) {
  test::TempDir dir;
  const double x = 0.0;
  MOA_ASSERT_OK(MakeDirs(dir.File("good")));
  WriteLines(dir.File("good/results.jsonl"), {Json("lora", {0}, 0, 0, 0, {.5, x, x}, {x, .6, .8}),
                                              Json("lora", {0}, 0, 0, 1, {.6, x, x}, {x, .7, .8})});
  MOA_ASSERT_OK(MakeDirs(dir.File("malformed")));
  MOA_ASSERT_OK(WriteFileAtomically(
      dir.File("malformed/results.jsonl"),
      Json("lora", {0}, 0, 1, 0, {.9, x, x}, {x, .9, .9}).dump() + "\n{\"step\": 5, \"env0\n"));
  MOA_ASSERT_OK(MakeDirs(dir.File("nokey")));
  nlohmann::json no_args = Json("lora", {0}, 0, 2, 0, {.9, x, x}, {x, .9, .9});
  no_args["args"].erase("trial_seed");
  WriteLines(dir.File("nokey/results.jsonl"), {no_args});
  MOA_ASSERT_OK(MakeDirs(dir.File("started")));
  MOA_ASSERT_OK(WriteFileAtomically(dir.File("started/config.ini"), "[train]\n"));
  MOA_ASSERT_OK(MakeDirs(dir.File("holiday_photos")));
  MOA_ASSERT_OK(WriteFileAtomically(dir.File("notes.txt"), "my notes\n"));
  MOA_ASSERT_OK(WriteFileAtomically(dir.File("results.jsonl.tmp.4242"), "{\"ste"));

  std::ostringstream warnings;
  auto records = LoadSweepRecords(dir.path(), &warnings);
  MOA_ASSERT_OK(records);
  ASSERT_EQ(records->size(), 2u);  // only the good run's
  EXPECT_EQ((*records)[1].step, 1);
  const std::string w = warnings.str();
  EXPECT_NE(w.find(dir.File("malformed/results.jsonl") + " line 2 is not JSON"), std::string::npos)
      << w;
  EXPECT_NE(w.find(dir.File("nokey/results.jsonl") + " line 1 has no args.trial_seed"),
            std::string::npos)
      << w;
  EXPECT_NE(w.find(dir.File("started") + " has no results.jsonl yet"), std::string::npos) << w;
  EXPECT_NE(w.find(dir.File("holiday_photos") + " holds no results.jsonl and is not a run"),
            std::string::npos)
      << w;
  EXPECT_NE(w.find(dir.File("notes.txt") + " is not a run directory"), std::string::npos) << w;
  EXPECT_NE(w.find("results.jsonl.tmp.4242 is a temporary file left by an interrupted write"),
            std::string::npos)
      << w;

  // The command: tables from the good run, warnings on stderr, nothing removed.
  std::string out;
  ASSERT_EQ(test::RunShell(test::BinaryDir() + "/moa collect --input_dir " + dir.path(), &out), 0)
      << out;
  EXPECT_NE(out.find("Total records: 2"), std::string::npos) << out;
  // The good run: validation .7 then .75 -> step 1, test .6; its last step gives the oracle .6.
  EXPECT_NE(out.find("lora                  60.0 +/- 0.0          X                     X"),
            std::string::npos)
      << out;
  for (const char* kept : {"malformed/results.jsonl", "nokey/results.jsonl", "started/config.ini",
                           "holiday_photos", "notes.txt", "results.jsonl.tmp.4242"}) {
    EXPECT_TRUE(std::filesystem::exists(dir.File(kept))) << kept;
  }
  for (const char* written : {"results.txt", "results.md", "results.tex"}) {
    EXPECT_TRUE(std::filesystem::exists(dir.File(written))) << written;
  }

  EXPECT_EQ(
      test::RunShell(test::BinaryDir() + "/moa collect --input_dir " + dir.File("nothere"), &out),
      1);
  EXPECT_NE(out.find(dir.File("nothere") + " is not a directory"), std::string::npos) << out;
  EXPECT_EQ(
      test::RunShell(
          test::BinaryDir() + "/moa collect --input_dir " + dir.path() + " --format html", &out),
      2);
  EXPECT_NE(out.find("--format must be text, markdown or latex"), std::string::npos) << out;
}

}  // namespace
}  // namespace moa::launch
