// Per-domain streams: exact composition of a batch, determinism, independence from the number
// of data-parallel ranks and from where the stream starts (resume), prefetch == on demand.
#include "data/stream.h"
#include "tests/support/test_support.h"

namespace moa::data {
namespace {

DomainDataset MakeDataset() {
  DomainDataset dataset;
  dataset.num_classes = 5;
  for (int d = 0; d < 3; ++d) {
    Domain domain;
    domain.name = "d" + std::to_string(d);
    const int64_t n = 20 + 7 * d;
    // Image value encodes (domain, sample) so a batch can be decoded.
    domain.images = (torch::arange(n, torch::kFloat32) + 1000 * d).reshape({n, 1, 1, 1});
    domain.labels = torch::arange(n, torch::kInt64) % 5;
    for (int64_t i = 0; i < n; ++i) (i % 4 == 0 ? domain.out : domain.in).push_back(i);
    dataset.domains.push_back(domain);
  }
  return dataset;
}

std::vector<Batch> Take(const DomainDataset& dataset, StreamOptions options, int steps) {
  DomainStream stream(dataset, options);
  std::vector<Batch> batches;
  for (int s = 0; s < steps; ++s) batches.push_back(stream.Next());
  return batches;
}

TEST(StreamTest, BatchHoldsOneMinibatchPerTrainingDomainFromItsInSplit) {
  const DomainDataset dataset = MakeDataset();
  StreamOptions options;
  options.train_domains = {0, 2};
  options.batch_size = 6;
  const auto batches = Take(dataset, options, 5);
  for (const Batch& b : batches) {
    ASSERT_EQ(b.images.size(0), 12);
    for (int64_t j = 0; j < 12; ++j) {
      const int64_t domain = j < 6 ? 0 : 2;
      EXPECT_EQ(b.domain_ids[j].item<int64_t>(), domain);
      const int64_t value = static_cast<int64_t>(b.images[j].item<float>());
      EXPECT_EQ(value / 1000, domain);
      const int64_t sample = value % 1000;
      EXPECT_NE(sample % 4, 0) << "a sample of the out split was drawn";
      EXPECT_EQ(b.labels[j].item<int64_t>(), sample % 5);
    }
  }
  EXPECT_EQ(batches[0].step, 0);
  EXPECT_EQ(batches[4].step, 4);
}

TEST(StreamTest, DrawsAreUniformWithReplacement) {
  // 20000 draws over 15 indices: each count within 5 standard deviations of 20000/15.
  const auto idx = DrawIndices(7, 1, 3, 15, 20000);
  std::vector<int> counts(15, 0);
  for (int64_t i : idx) {
    ASSERT_GE(i, 0);
    ASSERT_LT(i, 15);
    ++counts[i];
  }
  const double mean = 20000.0 / 15, sd = std::sqrt(20000.0 * (1.0 / 15) * (14.0 / 15));
  for (int c : counts) EXPECT_NEAR(c, mean, 5 * sd);
}

TEST(StreamTest, DataParallelSlicesConcatenateToTheSingleRankBatch) {
  const DomainDataset dataset = MakeDataset();
  StreamOptions one;
  one.train_domains = {1, 2};
  one.batch_size = 8;
  one.seed = 11;
  const auto full = Take(dataset, one, 4);
  for (int dp : {2, 4}) {
    std::vector<std::vector<Batch>> per_rank;
    for (int r = 0; r < dp; ++r) {
      StreamOptions o = one;
      o.dp_size = dp;
      o.dp_rank = r;
      per_rank.push_back(Take(dataset, o, 4));
    }
    for (int s = 0; s < 4; ++s) {
      // Rebuild each domain's global minibatch from the ranks' slices.
      std::vector<torch::Tensor> parts;
      for (int d = 0; d < 2; ++d) {
        for (int r = 0; r < dp; ++r)
          parts.push_back(per_rank[r][s].images.narrow(0, d * 8 / dp, 8 / dp));
      }
      EXPECT_TRUE(torch::equal(torch::cat(parts), full[s].images)) << "dp=" << dp << " step " << s;
    }
  }
}

TEST(StreamTest, ResumedStreamContinuesTheSameSequence) {
  const DomainDataset dataset = MakeDataset();
  StreamOptions options;
  options.train_domains = {0, 1, 2};
  options.batch_size = 4;
  const auto full = Take(dataset, options, 10);
  options.first_step = 6;
  const auto resumed = Take(dataset, options, 4);
  for (int s = 0; s < 4; ++s) EXPECT_TRUE(torch::equal(resumed[s].images, full[6 + s].images));
}

TEST(StreamTest, PrefetchMatchesOnDemandAndSeedMatters) {
  const DomainDataset dataset = MakeDataset();
  StreamOptions options;
  options.train_domains = {0, 1};
  options.batch_size = 5;
  options.prefetch = 3;
  const auto prefetched = Take(dataset, options, 6);
  options.prefetch = 0;
  const auto direct = Take(dataset, options, 6);
  for (int s = 0; s < 6; ++s) EXPECT_TRUE(torch::equal(prefetched[s].images, direct[s].images));
  options.seed = 1;
  const auto other = Take(dataset, options, 6);
  bool any_different = false;
  for (int s = 0; s < 6; ++s) any_different |= !torch::equal(other[s].images, direct[s].images);
  EXPECT_TRUE(any_different);
}

TEST(StreamTest, BatchThatDoesNotDivideAmongRanksIsRefused) {
  const DomainDataset dataset = MakeDataset();
  StreamOptions options;
  options.train_domains = {0};
  options.batch_size = 5;
  options.dp_size = 2;
  EXPECT_THROW(DomainStream(dataset, options), std::invalid_argument);
}

}  // namespace
}  // namespace moa::data
