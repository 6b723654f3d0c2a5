// Evaluation's frozen-prefix cache: a split scored from the cached outputs of the embedding and
// the frozen blocks equals the split scored from its images (accuracy and summed loss), the
// cache serves the second evaluation, keeps nothing past its budget, and caches nothing where
// the embedding or the first block trains.
#include "trainer/evaluate.h"
#include "data/dataset.h"
#include "tests/support/tiny_config.h"
#include "trainer/build.h"

namespace moa::trainer {
namespace {

// A domain of 37 random 28 x 28 grey images (in memory), every one in its `out` split.
data::Domain RandomDomain() {
  torch::manual_seed(3);
  data::Domain domain;
  domain.name = "random";
  domain.images = torch::rand({37, 1, 28, 28});
  domain.labels = torch::randint(0, 10, {37}, torch::kInt64);
  for (int64_t i = 0; i < 37; ++i) domain.out.push_back(i);
  return domain;
}

std::shared_ptr<ClassifierImpl> TinyModel(const std::vector<std::string>& overrides) {
  test::TempDir dir;
  const RunConfig config = test::TinyConfig(dir.path(), overrides);
  auto info = data::LookupDataset(config.data.dataset);
  EXPECT_TRUE(info.ok());
  auto model = BuildModel(config, *info);
  EXPECT_TRUE(model.ok()) << model.status();
  return *model;
}

TEST(EvalPrefixCacheTest, CachedSplitsScoreAsTheirImages) {
  // tiny.ini: depth 2; LoRA on block 1 only, so the embedding and block 0 are frozen.
  auto model = TinyModel({"adapter.blocks=1"});
  ASSERT_EQ(FrozenPrefixBlocks(*model), 1);
  {
    torch::NoGradGuard no_grad;  // a head and LoRA that are not at their initial values
    for (auto& p : model->parameters()) {
      if (p.requires_grad()) p.normal_(0, 0.3);
    }
  }
  const data::Domain domain = RandomDomain();
  const SplitScore plain = EvaluateSplit(*model, domain, domain.out, /*batch_size=*/8);
  EvalPrefixCache cache(int64_t{64} << 20);
  const SplitScore first = EvaluateSplit(*model, domain, domain.out, 8, 1, 28, false, &cache, "a");
  EXPECT_EQ(cache.hits(), 0);
  EXPECT_EQ(cache.bytes(), 37 * 17 * 32 * 4 + 37 * 8);  // tokens x width floats, int64 labels
  const SplitScore second = EvaluateSplit(*model, domain, domain.out, 8, 1, 28, false, &cache, "a");
  EXPECT_EQ(cache.hits(), 1);
  for (const SplitScore& s : {first, second}) {
    EXPECT_EQ(s.total, 37);
    EXPECT_EQ(s.correct, plain.correct);
    EXPECT_NEAR(s.loss_sum, plain.loss_sum, 1e-9 * std::abs(plain.loss_sum));
  }
  // A change to the trained block shows in the cached evaluation as in the plain one.
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) {
      if (p.requires_grad()) p.add_(0.5);
    }
  }
  const SplitScore changed = EvaluateSplit(*model, domain, domain.out, 8);
  const SplitScore cached = EvaluateSplit(*model, domain, domain.out, 8, 1, 28, false, &cache, "a");
  EXPECT_EQ(cache.hits(), 2);
  EXPECT_NE(changed.loss_sum, plain.loss_sum);
  EXPECT_EQ(cached.correct, changed.correct);
  EXPECT_NEAR(cached.loss_sum, changed.loss_sum, 1e-9 * std::abs(changed.loss_sum));
}

TEST(EvalPrefixCacheTest, BudgetAndTrainedEmbeddingKeepNothing) {
  const data::Domain domain = RandomDomain();
  auto model = TinyModel({"adapter.blocks=1"});
  EvalPrefixCache small(1000);  // less than one batch of prefixes
  EvaluateSplit(*model, domain, domain.out, 8, 1, 28, false, &small, "a");
  EvaluateSplit(*model, domain, domain.out, 8, 1, 28, false, &small, "a");
  EXPECT_EQ(small.bytes(), 0);
  EXPECT_EQ(small.hits(), 0);
  // LoRA on every block, and full fine-tuning: nothing before the first trained block.
  EXPECT_EQ(FrozenPrefixBlocks(*TinyModel({"adapter.blocks=all"})), 0);
  EXPECT_EQ(FrozenPrefixBlocks(*TinyModel({"adapter.method=full"})), 0);
  EvalPrefixCache cache(int64_t{64} << 20);
  auto full = TinyModel({"adapter.method=full"});
  EvaluateSplit(*full, domain, domain.out, 8, 1, 28, false, &cache, "a");
  EXPECT_EQ(cache.bytes(), 0);
}

}  // namespace
}  // namespace moa::trainer
