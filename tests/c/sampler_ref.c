/* The original runtime's sampler (llama2.c run.c, with the softmax sum in double as gpt-oss's
 * runtime does), compiled by tests/test_sampler.py as an independent reference. */
#include <math.h>
#include <stdlib.h>

typedef struct { float prob; int index; } ProbIndex;

unsigned int random_u32(unsigned long long *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (*state * 0x2545F4914F6CDD1Dull) >> 32;
}

float random_f32(unsigned long long *state) { return (random_u32(state) >> 8) / 16777216.0f; }

void softmax(float *x, int size) {
    float max_val = x[0];
    for (int i = 1; i < size; i++) if (x[i] > max_val) max_val = x[i];
    double sum = 0.0;
    for (int i = 0; i < size; i++) { x[i] = expf(x[i] - max_val); sum += x[i]; }
    for (int i = 0; i < size; i++) x[i] /= sum;
}

int sample_argmax(const float *p, int n) {
    int max_i = 0; float max_p = p[0];
    for (int i = 1; i < n; i++) if (p[i] > max_p) { max_i = i; max_p = p[i]; }
    return max_i;
}

int sample_mult(const float *p, int n, float coin) {
    float cdf = 0.0f;
    for (int i = 0; i < n; i++) { cdf += p[i]; if (coin < cdf) return i; }
    return n - 1;
}

static int compare(const void *a, const void *b) {
    const ProbIndex *a_ = a, *b_ = b;
    if (a_->prob > b_->prob) return -1;
    if (a_->prob < b_->prob) return 1;
    return a_->index - b_->index; /* deterministic ties (qsort's own order is unspecified) */
}

int sample_topp(const float *p, int n, float topp, float coin) {
    ProbIndex *probindex = malloc(n * sizeof(ProbIndex));
    int n0 = 0;
    const float cutoff = (1.0f - topp) / (n - 1);
    for (int i = 0; i < n; i++) if (p[i] >= cutoff) { probindex[n0].index = i; probindex[n0].prob = p[i]; n0++; }
    qsort(probindex, n0, sizeof(ProbIndex), compare);
    float cumulative_prob = 0.0f;
    int last_idx = n0 - 1;
    for (int i = 0; i < n0; i++) {
        cumulative_prob += probindex[i].prob;
        if (cumulative_prob > topp) { last_idx = i; break; }
    }
    float r = coin * cumulative_prob;
    float cdf = 0.0f;
    int result = probindex[last_idx].index;
    for (int i = 0; i <= last_idx; i++) {
        cdf += probindex[i].prob;
        if (r < cdf) { result = probindex[i].index; break; }
    }
    free(probindex);
    return result;
}

/* One call of sample(): logits are modified in place, as in the original. */
int sample(float *logits, int n, float temperature, float topp, unsigned long long *state) {
    if (temperature == 0.0f) return sample_argmax(logits, n);
    for (int q = 0; q < n; q++) logits[q] /= temperature;
    softmax(logits, n);
    float coin = random_f32(state);
    if (topp <= 0 || topp >= 1) return sample_mult(logits, n, coin);
    return sample_topp(logits, n, topp, coin);
}
