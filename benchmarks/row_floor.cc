// The memory floor of a row-sparse training epoch on this machine, without
// TensorFlow: how fast can plain C++ gather and update random embedding rows?
//
//   g++ -O3 -mavx2 -mfma -pthread benchmarks/row_floor.cc -o /tmp/row_floor && /tmp/row_floor
//
// Shapes are Gowalla's (40,981 items, d = 128, batch 8192: 16,384 item rows
// and 8,192 user rows per step, 99 steps per epoch). For 1 and 2 threads it
// times, per 16,384 random rows: a gather into a dense buffer, an axpy
// (row += a * g, the SGD scatter-add; threads own row ranges, so duplicates
// never race), and a lazy-Adam row update (m, v and the row, each read and
// written); and an 8 MB memcpy for scale. It then prints the epoch floors
// these imply for BPR: gather + axpy of 24,576 rows per step (SGD), and
// gather + Adam update (lazy Adam), excluding everything else a step does.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <vector>

namespace {

const int kRows = 40981, kDim = 128, kBatch = 16384, kReps = 20;

double Millis(const std::function<void()>& fn) {
  fn();  // warm
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < kReps; ++i) fn();
    auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::milli>(t1 - t0).count() / kReps);
  }
  return best;
}

// One row of lazy Adam; __restrict lets the compiler vectorise it.
void AdamRow(float* __restrict w, float* __restrict m, float* __restrict v, const float* __restrict g) {
  for (int c = 0; c < kDim; ++c) {
    float mc = 0.9f * m[c] + 0.1f * g[c];
    float vc = 0.999f * v[c] + 0.001f * g[c] * g[c];
    m[c] = mc;
    v[c] = vc;
    w[c] -= 1e-6f * mc / (std::sqrt(vc) + 1e-7f);
  }
}

// Runs body(part, parts) on `threads` threads.
void Parallel(int threads, const std::function<void(int, int)>& body) {
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(body, t, threads);
  body(0, threads);
  for (auto& th : pool) th.join();
}

}  // namespace

int main() {
  std::vector<float> table(size_t(kRows) * kDim, 0.01f), m(table.size(), 0.f), v(table.size(), 0.f);
  std::vector<float> grads(size_t(kBatch) * kDim, 0.5f), out(size_t(kBatch) * kDim);
  std::vector<int> idx(kBatch);
  std::mt19937 rng(0);
  for (int& i : idx) i = int(rng() % kRows);

  std::printf("| threads | gather ms | axpy ms | lazy-Adam ms | memcpy 8 MB ms | SGD floor s/epoch | lazy-Adam floor s/epoch |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (int threads : {1, 2}) {
    double gather = Millis([&] {
      Parallel(threads, [&](int t, int n) {
        for (int p = t * kBatch / n; p < (t + 1) * kBatch / n; ++p)
          std::memcpy(&out[size_t(p) * kDim], &table[size_t(idx[p]) * kDim], kDim * sizeof(float));
      });
    });
    double axpy = Millis([&] {
      Parallel(threads, [&](int t, int n) {
        for (int p = 0; p < kBatch; ++p) {
          if (int64_t(idx[p]) * n / kRows != t) continue;
          float* row = &table[size_t(idx[p]) * kDim];
          const float* g = &grads[size_t(p) * kDim];
          for (int c = 0; c < kDim; ++c) row[c] -= 1e-6f * g[c];
        }
      });
    });
    double adam = Millis([&] {
      Parallel(threads, [&](int t, int n) {
        for (int p = 0; p < kBatch; ++p) {
          if (int64_t(idx[p]) * n / kRows != t) continue;
          size_t off = size_t(idx[p]) * kDim;
          AdamRow(&table[off], &m[off], &v[off], &grads[size_t(p) * kDim]);
        }
      });
    });
    double copy = Millis([&] {
      Parallel(threads, [&](int t, int n) {
        size_t lo = size_t(t) * kBatch * kDim / n, hi = size_t(t + 1) * kBatch * kDim / n;
        std::memcpy(&out[lo], &table[size_t(20000) * kDim + lo], (hi - lo) * sizeof(float));
      });
    });
    // Per step: 24,576 rows = 1.5 x the 16,384 timed; 99 steps per epoch.
    const double per_epoch = 1.5 * 99 / 1000;
    std::printf("| %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", threads, gather, axpy, adam, copy,
                (gather + axpy) * per_epoch, (gather + adam) * per_epoch);
  }
  return 0;
}
