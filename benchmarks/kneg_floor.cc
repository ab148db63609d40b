// The floor of a K-negative BPR step, measured (issue #26 item 3): plain C++,
// no TensorFlow, on Gowalla's shapes (29,858 users, 40,981 items, 810,128
// training pairs, d = 128, float32), fused forward + backward + SGD update.
//
//   g++ -O3 -march=native -ffast-math -fopenmp benchmarks/kneg_floor.cc -o /tmp/kneg_floor
//   OMP_NUM_THREADS=2 /tmp/kneg_floor /work/shared/data/gowalla/train.txt > benchmarks/results_kneg_floor.json
//   OMP_NUM_THREADS=2 /tmp/kneg_floor /work/shared/data/gowalla/train.txt check   # naive == item-major?
//
// A step takes the next B (user u_b, positive i_b) pairs of a shuffled epoch
// order and K uniform random negative items j_bk per pair. With
// d_bk = u_b.j_bk - u_b.i_b and c_bk = sigmoid(d_bk) / (B K):
//   loss   = mean_{b,k} softplus(d_bk)
//          + 0.5 l2 sum_b (|u_b|^2 + |i_b|^2 + mean_k |j_bk|^2) / B
//   g_u_b  = sum_k c_bk (j_bk - i_b) + l2 u_b / B
//   g_i_b  = -sum_k c_bk u_b         + l2 i_b / B
//   g_j_bk = c_bk u_b                + l2 j_bk / (B K)
// summed per distinct row (a row used n times gets n terms), then plain SGD
// (row -= lr g_row). Every gradient sees the rows as they were before the step.
// The sampler (batch ids and negatives) runs outside the timed region; the
// timed region is the rest of the step, the loss included.
//
// Two processing orders, both exact (`check` compares them):
//  naive      rows split over threads; per row b: user and positive rows held
//             in registers, each negative gathered, dotted, and its gradient
//             scattered into the thread's own dense item-gradient table; then
//             each distinct item row summed over threads and updated.
//  item-major the step's negatives bucketed by item (parallel counting sort);
//             each bucket's item row read once into registers, scored against
//             the batch's gathered user rows, and - since a negative's
//             coefficient needs only its own score and s_b0, known up front -
//             its backward done in the same pass, 16 pairs at a time; the item
//             row is then updated in place (positives of this step excepted).
//             Positives are then bucketed the same way; user gradients are
//             summed from per-thread buffers.
//
// Timing: per (order, K, B), after one warm step, `frac` of an epoch's steps
// (default 1/16, at least 2 steps) are timed, repeated `reps` times on
// successive slices of the epoch order; the best repeat's time per positive
// times 810,128 is reported as seconds per epoch (an extrapolation).
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr int kDim = 128, kV = kDim / 16, kChunk = 16, kAhead = 4;
typedef float v16 __attribute__((vector_size(64)));  // one 512-bit lane group
constexpr float kLr = 10.f, kL2 = 1e-4f;

float Hsum(v16 a) {
  float s = 0.f;
  for (int l = 0; l < 16; ++l) s += a[l];
  return s;
}
float Dot(const v16* a, const v16* b) {
  v16 x = a[0] * b[0], y = a[1] * b[1];
  for (int i = 2; i < kV; i += 2) x += a[i] * b[i], y += a[i + 1] * b[i + 1];
  return Hsum(x + y);
}
void Axpy(float c, const v16* x, v16* y) {
  for (int i = 0; i < kV; ++i) y[i] += c * x[i];
}

// c[e] = sigmoid(s[e] - s0[e]) * scale; returns sum_{e<n} softplus(s[e] - s0[e]).
// Always all kChunk lanes (one vector exp and log1p, libmvec under
// -ffast-math); lanes >= n must hold finite values and are ignored.
float Coefs(int n, const float* s, const float* s0, float scale, float* c) {
  float loss = 0.f;
  for (int e = 0; e < kChunk; ++e) {
    float d = s[e] - s0[e], x = std::exp(-std::fabs(d));
    loss += e < n ? std::fmax(d, 0.f) + std::log1p(x) : 0.f;
    c[e] = (d >= 0.f ? 1.f : x) / (1.f + x) * scale;
  }
  return loss;
}

// Ask for a row's 8 cache lines ahead of use.
void Prefetch(const v16* row) {
  for (int i = 0; i < kV; i += 1) __builtin_prefetch(row + i);
}

v16* AllocRows(size_t rows) {
  v16* p = static_cast<v16*>(std::aligned_alloc(64, rows * kDim * sizeof(float)));
  std::memset(p, 0, rows * kDim * sizeof(float));
  return p;
}

// A step's uses of items, bucketed by item with a parallel counting sort:
// items[d] is the d-th distinct item, entry[start[d] .. start[d+1]) the batch
// rows b that use it (once per use). Sort is called by every thread of a
// parallel region; thread t counts and scatters rows [tB/T, (t+1)B/T).
struct Buckets {
  std::vector<int> items, start, entry, mark, slot;
  std::vector<std::vector<int>> cnt, seen;  // per thread: counts (then cursors), items seen
  int stamp = 0;
  Buckets(int n_items, int threads)
      : mark(n_items, 0), slot(n_items, 0), cnt(threads, std::vector<int>(n_items, 0)), seen(threads) {}
  void Sort(const int* keys, int B, int K) {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    const size_t lo = size_t(t) * B / T * K, hi = size_t(t + 1) * B / T * K;
    std::vector<int>& c = cnt[t];
    for (size_t p = lo; p < hi; ++p)
      if (c[keys[p]]++ == 0) seen[t].push_back(keys[p]);
#pragma omp barrier
#pragma omp single
    {  // distinct items in order of appearance; counts become scatter cursors
      ++stamp;
      items.clear();
      start.clear();
      entry.resize(size_t(B) * K);
      int pos = 0;
      for (int u = 0; u < T; ++u)
        for (int it : seen[u]) {
          if (mark[it] == stamp) continue;
          mark[it] = stamp;
          slot[it] = int(items.size());
          items.push_back(it);
          start.push_back(pos);
          for (int v = 0; v < T; ++v)
            if (cnt[v][it]) std::swap(cnt[v][it], pos), pos += cnt[v][it];
        }
      start.push_back(pos);
    }  // implicit barrier
    for (size_t p = lo; p < hi; ++p) entry[c[keys[p]]++] = int(p / K);
#pragma omp barrier
    for (int it : seen[t]) c[it] = 0;
    seen[t].clear();
  }
  bool Has(int item) const { return mark[item] == stamp; }
  // This thread's share [first, last) of the distinct items, balanced by uses.
  std::pair<int, int> Share() const {
    const int t = omp_get_thread_num(), T = omp_get_num_threads(), nd = int(items.size());
    auto at = [&](int u) {
      long long goal = (long long)start[nd] * u / T;
      return u == T ? nd : int(std::lower_bound(start.begin(), start.begin() + nd, goal) - start.begin());
    };
    return {at(t), at(t + 1)};
  }
};

struct Model {
  int n_users, n_items, T;
  v16 *U, *I;
};

// One batch's ids: users[B], pos[B], neg[B*K].
struct Batch {
  int B, K;
  std::vector<int> users, pos, neg;
};

// Scratch shared by both orders, sized for the largest (B, K).
struct Work {
  Buckets nb, pb;                   // item-major: negatives, positives by item
  v16 *Ub, *GP;                     // gathered user rows [B]; positive-item grads [B]
  std::vector<v16*> GU, GI;         // per thread: user grads [B]; naive: item grads [n_items]
  std::vector<std::vector<float>> CS;  // per thread: sum_k c_bk over its buckets [B]
  std::vector<std::vector<int>> touched, tmark;  // naive: per thread items touched this step
  std::vector<int> done;
  std::vector<float> s0;
  std::vector<double> loss;  // per thread
  int step = 0;
  Work(const Model& m, int maxB)
      : nb(m.n_items, m.T), pb(m.n_items, m.T), Ub(AllocRows(maxB)), GP(AllocRows(maxB)),
        CS(m.T, std::vector<float>(maxB)), touched(m.T), tmark(m.T, std::vector<int>(m.n_items, 0)),
        done(m.n_items, 0), s0(maxB), loss(m.T) {
    for (int t = 0; t < m.T; ++t) GU.push_back(AllocRows(maxB)), GI.push_back(AllocRows(m.n_items));
  }
};

// Order (a): per row b, gather - dot - scatter each negative.
double StepNaive(Model& m, const Batch& bt, Work& w) {
  const int B = bt.B, K = bt.K, step = ++w.step;
  const float inv = 1.f / (float(B) * K), l2b = kL2 / B, l2bk = kL2 * inv;
#pragma omp parallel
  {
    const int t = omp_get_thread_num();
    v16* G = w.GI[t];
    std::vector<int>& tl = w.touched[t];
    std::vector<int>& tm = w.tmark[t];
    tl.clear();
    double loss = 0.0, norms = 0.0;
    auto touch = [&](int it) {
      if (tm[it] != step) tm[it] = step, tl.push_back(it);
      return G + size_t(it) * kV;
    };
    // Phase 1: forward + backward, rows split over threads.
#pragma omp for schedule(static)
    for (int b = 0; b < B; ++b) {
      v16 u[kV], gu[kV] = {};
      for (int i = 0; i < kV; ++i) u[i] = m.U[size_t(bt.users[b]) * kV + i];
      const v16* ir = m.I + size_t(bt.pos[b]) * kV;
      const float s0 = Dot(u, ir);
      norms += Dot(u, u) + Dot(ir, ir);
      float csum = 0.f, s[kChunk] = {}, s0c[kChunk], c[kChunk];
      std::fill(s0c, s0c + kChunk, s0);
      for (int k0 = 0; k0 < K; k0 += kChunk) {
        const int n = std::min(kChunk, K - k0);
        const int* js = &bt.neg[size_t(b) * K + k0];
        for (int e = 0; e < n; ++e) {
          if (k0 + e + kAhead < K) Prefetch(m.I + size_t(js[e + kAhead]) * kV), Prefetch(G + size_t(js[e + kAhead]) * kV);
          s[e] = Dot(u, m.I + size_t(js[e]) * kV);
        }
        loss += Coefs(n, s, s0c, inv, c);
        for (int e = 0; e < n; ++e) {
          const v16* jr = m.I + size_t(js[e]) * kV;
          v16* g = touch(js[e]);
          for (int i = 0; i < kV; ++i) g[i] += c[e] * u[i] + l2bk * jr[i], gu[i] += c[e] * jr[i];
          norms += Dot(jr, jr) / K;
          csum += c[e];
        }
      }
      v16* gi = touch(bt.pos[b]);
      v16* gub = w.GU[0] + size_t(b) * kV;
      for (int i = 0; i < kV; ++i) {
        gi[i] += -csum * u[i] + l2b * ir[i];
        gub[i] = gu[i] - csum * ir[i] + l2b * u[i];
      }
    }  // implicit barrier
    // Phase 2: update each distinct item (threads own item ranges), summing
    // and zeroing the per-thread gradient rows; then users (by user range).
    const int T = m.T, ilo = m.n_items * t / T, ihi = m.n_items * (t + 1) / T;
    for (int v = 0; v < T; ++v)
      for (int it : w.touched[v]) {
        if (it < ilo || it >= ihi || w.done[it] == step) continue;
        w.done[it] = step;
        v16* r = m.I + size_t(it) * kV;
        for (int x = 0; x < T; ++x) {
          if (w.tmark[x][it] != step) continue;
          v16* g = w.GI[x] + size_t(it) * kV;
          for (int i = 0; i < kV; ++i) r[i] -= kLr * g[i], g[i] = v16{};
        }
      }
    const int ulo = m.n_users * t / T, uhi = m.n_users * (t + 1) / T;
    for (int b = 0; b < B; ++b) {
      if (bt.users[b] < ulo || bt.users[b] >= uhi) continue;
      v16* r = m.U + size_t(bt.users[b]) * kV;
      Axpy(-kLr, w.GU[0] + size_t(b) * kV, r);
    }
    w.loss[t] = loss * inv + 0.5 * kL2 * norms / B;
  }
  double total = 0.0;
  for (double l : w.loss) total += l;
  return total;
}

// Order (b): item-major, negatives' forward and backward in one pass per bucket.
double StepItemMajor(Model& m, const Batch& bt, Work& w) {
  const int B = bt.B, K = bt.K;
  const float inv = 1.f / (float(B) * K), l2b = kL2 / B, l2bk = kL2 * inv;
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), T = omp_get_num_threads();
    double loss = 0.0, norms = 0.0;
    // Phase 1: bucket the negatives, then the positives, by item.
    w.nb.Sort(bt.neg.data(), B, K);
    w.pb.Sort(bt.pos.data(), B, 1);
    // Phase 2: gather user rows, positive scores s_b0; zero this step's buffers.
    v16* GU = w.GU[t];
    std::memset(GU, 0, size_t(B) * kDim * sizeof(float));
    std::fill(w.CS[t].begin(), w.CS[t].begin() + B, 0.f);
#pragma omp for schedule(static)
    for (int b = 0; b < B; ++b) {
      v16* ub = w.Ub + size_t(b) * kV;
      std::memcpy(ub, m.U + size_t(bt.users[b]) * kV, kDim * sizeof(float));
      const v16* ir = m.I + size_t(bt.pos[b]) * kV;
      w.s0[b] = Dot(ub, ir);
      norms += Dot(ub, ub) + Dot(ir, ir);
      std::memset(w.GP + size_t(b) * kV, 0, kDim * sizeof(float));
    }  // implicit barrier
    // Phase 3: per negative item, 16 pairs at a time: scores, coefficients,
    // then g_j += c u_b (registers) and g_u_b += c j (this thread's buffer).
    float* CS = w.CS[t].data();
    auto [d0, d1] = w.nb.Share();
    for (int d = d0; d < d1; ++d) {
      const int it = w.nb.items[d], e0 = w.nb.start[d], e1 = w.nb.start[d + 1];
      if (d + 2 < d1) Prefetch(m.I + size_t(w.nb.items[d + 2]) * kV);
      v16 r[kV], g[kV] = {};
      for (int i = 0; i < kV; ++i) r[i] = m.I[size_t(it) * kV + i];
      for (int c0 = e0; c0 < e1; c0 += kChunk) {
        const int n = std::min(kChunk, e1 - c0);
        const int* bs = &w.nb.entry[c0];
        float s[kChunk] = {}, s0c[kChunk] = {}, c[kChunk];
        for (int e = 0; e < n; ++e) {
          if (c0 + e + kAhead < e1) Prefetch(w.Ub + size_t(bs[e + kAhead]) * kV), Prefetch(GU + size_t(bs[e + kAhead]) * kV);
          s[e] = Dot(r, w.Ub + size_t(bs[e]) * kV), s0c[e] = w.s0[bs[e]];
        }
        loss += Coefs(n, s, s0c, inv, c);
        for (int e = 0; e < n; ++e) {
          const v16* ub = w.Ub + size_t(bs[e]) * kV;
          v16* gub = GU + size_t(bs[e]) * kV;
          for (int i = 0; i < kV; ++i) g[i] += c[e] * ub[i], gub[i] += c[e] * r[i];
          CS[bs[e]] += c[e];
        }
      }
      const float uses = float(e1 - e0);
      norms += uses * Dot(r, r) / K;
      for (int i = 0; i < kV; ++i) g[i] += uses * l2bk * r[i];
      if (w.pb.Has(it)) {  // also a positive: its gradient is finished in phase 4
        std::memcpy(w.GP + size_t(w.pb.slot[it]) * kV, g, kDim * sizeof(float));
      } else {
        for (int i = 0; i < kV; ++i) m.I[size_t(it) * kV + i] = r[i] - kLr * g[i];
      }
    }
#pragma omp barrier
    // Phase 4: per positive item: c_b0 = -sum_k c_bk; g_i += c_b0 u_b,
    // g_u_b += c_b0 i; update the item row.
    auto [p0, p1] = w.pb.Share();
    for (int d = p0; d < p1; ++d) {
      const int it = w.pb.items[d], e0 = w.pb.start[d], e1 = w.pb.start[d + 1];
      v16 r[kV], g[kV];
      for (int i = 0; i < kV; ++i) r[i] = m.I[size_t(it) * kV + i], g[i] = w.GP[size_t(d) * kV + i];
      for (int e = e0; e < e1; ++e) {
        const int b = w.pb.entry[e];
        float c = 0.f;
        for (int v = 0; v < T; ++v) c -= w.CS[v][b];
        Axpy(c, w.Ub + size_t(b) * kV, g);
        Axpy(c, r, GU + size_t(b) * kV);
      }
      for (int i = 0; i < kV; ++i) m.I[size_t(it) * kV + i] = r[i] - kLr * (g[i] + (e1 - e0) * l2b * r[i]);
    }
#pragma omp barrier
    // Phase 5: users (threads own user ranges): sum the per-thread gradients.
    const int ulo = m.n_users * t / T, uhi = m.n_users * (t + 1) / T;
    for (int b = 0; b < B; ++b) {
      if (bt.users[b] < ulo || bt.users[b] >= uhi) continue;
      v16* row = m.U + size_t(bt.users[b]) * kV;
      const v16* ub = w.Ub + size_t(b) * kV;
      for (int i = 0; i < kV; ++i) {
        v16 g = l2b * ub[i];
        for (int v = 0; v < T; ++v) g += w.GU[v][size_t(b) * kV + i];
        row[i] -= kLr * g;
      }
    }
    w.loss[t] = loss * inv + 0.5 * kL2 * norms / B;
  }
  double total = 0.0;
  for (double l : w.loss) total += l;
  return total;
}

// The sampler (untimed): rows [start, start+B) of the epoch order, K uniform negatives each.
void Sample(const std::vector<int>& pu, const std::vector<int>& pi, size_t start, int n_items, uint64_t& rng,
            Batch& bt) {
  bt.users.resize(bt.B), bt.pos.resize(bt.B), bt.neg.resize(size_t(bt.B) * bt.K);
  for (int b = 0; b < bt.B; ++b) bt.users[b] = pu[(start + b) % pu.size()], bt.pos[b] = pi[(start + b) % pu.size()];
  for (int& j : bt.neg) {  // splitmix64, multiply-shift to [0, n_items)
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull, z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    j = int(((z >> 32) * uint64_t(n_items)) >> 32);
  }
}

void InitTables(Model& m, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.f, 0.1f);
  for (float* p : {(float*)m.U, (float*)m.I})
    for (size_t x = 0, n = size_t(p == (float*)m.U ? m.n_users : m.n_items) * kDim; x < n; ++x) p[x] = nd(gen);
}

double CpuSeconds() {  // this process, all threads
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

std::string LoadAvg() {  // the first three fields of /proc/loadavg: other work on the machine
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

std::string CpuModel() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}

}  // namespace

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "/work/shared/data/gowalla/train.txt";
  const bool check = argc > 2 && std::string(argv[2]) == "check";
  const double frac = argc > 2 && !check ? std::atof(argv[2]) : 1.0 / 16;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 3;
  auto list = [&](int a, const char* def) {  // comma-separated ints
    std::vector<int> v;
    std::istringstream ss(argc > a ? argv[a] : def);
    for (std::string x; std::getline(ss, x, ',');) v.push_back(std::atoi(x.c_str()));
    return v;
  };
  const std::vector<int> Ks = list(4, "1,4,16,64,256"), Bs = list(5, "256,1024,8192");
  // Training pairs (user, positive) in a shuffled epoch order.
  std::vector<int> pu, pi;
  int n_users = 0, n_items = 0;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    std::istringstream ss(line);
    int u, i;
    if (!(ss >> u)) continue;
    n_users = std::max(n_users, u + 1);
    while (ss >> i) pu.push_back(u), pi.push_back(i), n_items = std::max(n_items, i + 1);
  }
  std::vector<size_t> perm(pu.size());
  for (size_t x = 0; x < perm.size(); ++x) perm[x] = x;
  std::shuffle(perm.begin(), perm.end(), std::mt19937(1));
  std::vector<int> su(pu.size()), si(pu.size());
  for (size_t x = 0; x < perm.size(); ++x) su[x] = pu[perm[x]], si[x] = pi[perm[x]];
  const size_t N = su.size();
  if (N == 0) return fprintf(stderr, "no training pairs in %s\n", path), 1;

  Model m{n_users, n_items, omp_get_max_threads(), AllocRows(n_users), AllocRows(n_items)};
  InitTables(m, 0);
  Work w(m, 8192);
  fprintf(stderr, "%d users, %d items, %zu pairs, %d threads\n", n_users, n_items, N, m.T);

  if (check) {  // same batches through both orders from the same tables
    std::vector<float> U0((float*)m.U, (float*)m.U + size_t(n_users) * kDim),
        I0((float*)m.I, (float*)m.I + size_t(n_items) * kDim);
    for (int K : {1, 16}) {
      std::vector<float> out[2][2];
      double loss[2] = {0, 0};
      for (int o = 0; o < 2; ++o) {
        std::copy(U0.begin(), U0.end(), (float*)m.U), std::copy(I0.begin(), I0.end(), (float*)m.I);
        uint64_t rng = 7;
        Batch bt{1024, K};
        for (int s = 0; s < 5; ++s) {
          Sample(su, si, size_t(s) * 1024, n_items, rng, bt);
          loss[o] = o ? StepItemMajor(m, bt, w) : StepNaive(m, bt, w);
        }
        out[o][0].assign((float*)m.U, (float*)m.U + U0.size()), out[o][1].assign((float*)m.I, (float*)m.I + I0.size());
      }
      double diff = 0, moved = 0;
      for (int k = 0; k < 2; ++k)
        for (size_t x = 0; x < out[0][k].size(); ++x)
          diff = std::max(diff, double(std::fabs(out[0][k][x] - out[1][k][x]))),
          moved = std::max(moved, double(std::fabs(out[0][k][x] - (k ? I0[x] : U0[x]))));
      printf("K=%d: loss naive %.7f item-major %.7f; max |table diff| %.3g (max step change %.3g)\n", K, loss[0],
             loss[1], diff, moved);
    }
    return 0;
  }

  char date[32];
  time_t now = time(nullptr);
  strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
  cpu_set_t cs;
  sched_getaffinity(0, sizeof cs, &cs);
  printf("{\n  \"machine\": {\"nproc\": %d, \"cpu\": \"%s\", \"date\": \"%s\"},\n", CPU_COUNT(&cs), CpuModel().c_str(),
         date);
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  printf("  \"loadavg_start\": \"%s\", \"omp_wait_policy\": \"%s\",\n", LoadAvg().c_str(), wait ? wait : "default");
  printf("  \"threads\": %d, \"dim\": %d, \"users\": %d, \"items\": %d, \"positives\": %zu,\n", m.T, kDim, n_users,
         n_items, N);
  printf("  \"timing\": \"per (order, K, batch): one warm step, then %.4g of an epoch's steps (>= 2) timed, best of %d "
         "repeats on successive slices of the epoch order, seconds per positive x %zu (wall; cpu_s_per_epoch: "
         "CPU time of all threads, same basis); sampler outside the timed region\",\n  \"results\": [\n", frac, reps, N);
  fprintf(stderr, "| order | K | batch | s/epoch | CPU s/epoch | loss |\n|---|---|---|---|---|---|\n");
  size_t cursor = 0;
  uint64_t rng = 42;
  bool first = true;
  for (int K : Ks)
    for (int B : Bs) {  // the two orders alternate repeat by repeat, so both see the same background load
      Batch bt{B, K};
      const int steps = std::max(2, int(std::ceil(double(N) / B * frac)));
      double best[2] = {1e30, 1e30}, best_cpu[2] = {1e30, 1e30}, loss[2] = {0, 0};
      for (int r = -1; r < reps; ++r)  // r = -1: one warm step
        for (int o = 0; o < 2; ++o) {
          double secs = 0, cpu = 0;
          for (int s = 0; s < (r < 0 ? 1 : steps); ++s, cursor += B) {
            Sample(su, si, cursor, n_items, rng, bt);
            const double c0 = CpuSeconds();
            auto t0 = std::chrono::steady_clock::now();
            loss[o] = o ? StepItemMajor(m, bt, w) : StepNaive(m, bt, w);
            secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            cpu += CpuSeconds() - c0;
          }
          if (r >= 0) best[o] = std::min(best[o], secs / (double(steps) * B) * N);
          if (r >= 0) best_cpu[o] = std::min(best_cpu[o], cpu / (double(steps) * B) * N);
        }
      for (int o = 0; o < 2; ++o) {
        const char* name = o ? "item-major" : "naive";
        printf("%s    {\"order\": \"%s\", \"K\": %d, \"batch\": %d, \"s_per_epoch\": %.3f, \"cpu_s_per_epoch\": %.3f, "
               "\"steps_timed\": %d, \"last_loss\": %.5f}",
               first ? "" : ",\n", name, K, B, best[o], best_cpu[o], steps, loss[o]);
        fprintf(stderr, "| %s | %d | %d | %.3f | %.3f | %.5f |\n", name, K, B, best[o], best_cpu[o], loss[o]);
        first = false;
      }
      fflush(stdout);
    }
  printf("\n  ],\n  \"loadavg_end\": \"%s\"\n}\n", LoadAvg().c_str());
  return 0;
}
