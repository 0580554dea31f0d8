// loader.c: the pipeline. One reader thread walks the epoch's sample stream
// (shard order, tar grouping, shuffle buffer) and numbers every sample with
// its position p in that stream. N decode threads transform samples into fixed
// slots of a ring of batches, with an RNG seeded from (seed, epoch, p), so the
// batches never depend on which thread ran what, or when.
//
// Train: one global stream, sliced by rank. Every rank walks the same stream:
// all shards (or files) in the same (seed, epoch) order, the same shuffle
// buffer. With batch b per rank and G = b * world_size, sample p belongs to
// global step p / G, and rank r owns slots [r*b, (r+1)*b) of each global batch
// (local slot p % G - r*b); the other ranks drop it before decoding. So R ranks
// concatenated give, bit for bit, one process with batch G, and a run can
// resume on another number of ranks. An epoch is floor(samples / G) steps on
// every rank; a truncated shard pads the plan with empty positions. A skipped
// sample leaves its slot empty and its owner's batch is compacted (n < b), so
// the ranks' compacted batches concatenate to the global compacted batch.
// With world_size > 1 a rank reads tar headers only and fetches the bytes of
// the samples it owns by offset (gzip cannot seek: there, it inflates all and
// frees what it does not own); an ImageFolder file is read only by its owner.
// World 1 is the same stream with one owner and reads eagerly.
//
// Eval: no shuffle; rank r keeps every world_size-th sample (every
// world_size-th file of an ImageFolder), numbered in its own stream, so any
// number of ranks sees each sample once; the last partial batch is kept
// unless drop_last.
//
// Cursor: (epoch, step) of the next batch + the skip counters. Restoring
// replays the reader to that position, which is exact because the reader is
// a pure function of (seed, epoch). The replay reads tar headers and labels
// only; images still in the shuffle buffer at the cursor are read by offset.
// In train mode the step is global, so a cursor fits any world size with the
// same global batch.
//
// Shared cores: decode threads run at nice +cfg.nice (default 5), so the
// trainer's OpenMP threads win the cores while the decoders fill the queue
// in the gaps; measured in tools/bench/bench_loader.sh.
#include "loader.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common.h"
#include "image_folder.h"
#include "sample_transform.h"
#include "shard_list.h"
#include "webdataset.h"

enum { SKIP_FILLER = SKIP_NUM_REASONS };  // a padding slot: nothing to count

typedef struct {
    uint8_t *data;
    size_t len;
    ImageFormat ext;
    int32_t label;
    int skip;              // -1, a SkipReason, or SKIP_FILLER
    char *where;           // "shard key" or file path, for warnings
    const char *lazy_shard;  // set when the bytes are read at emit: in this shard at lazy_offset, or
    int64_t lazy_offset;     // (-1) this whole image file
    char detail[96];
    int64_t epoch, step, pos, seq;
    int slot;              // in this rank's batch
    uint64_t stream;       // the sample's RNG stream
    int expected;          // samples planned for this batch
    int last_in_epoch;
} WorkItem;

typedef struct {
    int64_t seq;           // batch sequence number this slot holds
    int64_t epoch, step;
    int expected, done, ready, last_in_epoch, n;
    int seen, skips[SKIP_NUM_REASONS];  // added to the totals when the batch is handed out
    float *view[2], *clean[2];
    int32_t *labels;
    uint8_t *ok;
} RingBatch;

struct Loader {
    LoaderConfig cfg;
    char **shards;
    int num_shards;
    int64_t *shard_len;
    uint8_t *longer_warned;     // [num_shards] the reader has said the shard holds more than shard_len
    Manifest manifest;
    int have_manifest;
    ImageFolder folder;
    int is_folder;
    int64_t total_samples;
    int nviews;
    size_t sample_floats;  // C*S*S
    int64_t stride;        // positions per step of the numbered stream: train b * world_size, eval b
    int64_t own_first;     // this rank's first slot in a step's positions: train rank * b, eval 0
    int sliced;            // train over several ranks: other ranks' samples are dropped, read lazily

    int64_t start_epoch, start_step;   // where the reader begins
    int started;
    atomic_int stop;                   // read without the lock by the reader's loops
    pthread_t reader;
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_cond_t cv_queue, cv_space, cv_ring, cv_ready;
    WorkItem *queue;
    int qcap, qhead, qcount;
    RingBatch *ring;
    int nring;
    int64_t next_seq, held_seq;
    int eof_pending;
    int empty_eval;                    // eval on a rank with no samples: every call ends the epoch
    int64_t next_epoch, next_step;     // cursor of the next batch
    int64_t skipped[SKIP_NUM_REASONS], seen;
    int warned;
};

static const char *skip_names[SKIP_NUM_REASONS] = {"corrupt image", "wrong format", "missing image or label",
                                                   "truncated tar", "unreadable shard", "too many pixels"};

const char *loader_skip_reason_name(SkipReason why) { return why < SKIP_NUM_REASONS ? skip_names[why] : "?"; }

void loader_config_defaults(LoaderConfig *c) {
    memset(c, 0, sizeof *c);
    c->mode = LOADER_TRAIN;
    c->batch_size = 64;
    c->image_size = 224;
    c->channels = 3;
    c->crop_scale[0] = 0.08f, c->crop_scale[1] = 1.0f;
    c->crop_ratio[0] = 3.0f / 4, c->crop_ratio[1] = 4.0f / 3;
    c->flip_p = 0.5f;
    c->interp = INTERP_BICUBIC;
    c->blur_sigma[0] = 0.1f, c->blur_sigma[1] = 2.0f;
    c->solarize_threshold = 0.5f;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    memcpy(c->mean, mean, sizeof mean);
    memcpy(c->std, std, sizeof std);
    c->num_threads = 2;
    c->queue_batches = 2;
    c->shuffle_bytes = 64u << 20;
    c->world_size = 1;
    c->max_skip_fraction = 0.05f;
    c->max_pixels = 64000000;
    c->warn_limit = 10;
    c->nice = 5;
    c->require_labels = 1;
}

// ---- source and epoch plan ------------------------------------------------------

// "<dir>/<prefix>-NNNNNN.tar" -> "<dir>/<prefix>-manifest.txt", or NULL.
static char *default_manifest_path(const char *shard) {
    const char *dash = strrchr(shard, '-'), *slash = strrchr(shard, '/');
    if (!dash || (slash && dash < slash)) return NULL;
    size_t n = dash - shard;
    char *p = xmalloc(n + 16, "manifest path");
    memcpy(p, shard, n);
    strcpy(p + n, "-manifest.txt");
    return p;
}

static void open_shards(Loader *L) {
    L->shards = shard_list_expand(L->cfg.shards, &L->num_shards);
    if (L->num_shards == 0) fatal("data loader: shard list '%s' expands to no shards", L->cfg.shards);
    char *mpath = L->cfg.manifest && *L->cfg.manifest ? xstrdup(L->cfg.manifest) : default_manifest_path(L->shards[0]);
    if (mpath && manifest_read(mpath, &L->manifest) == 0) L->have_manifest = 1;
    else if (L->cfg.manifest && *L->cfg.manifest) fatal("data loader: cannot read manifest %s: %s", mpath, strerror(errno));
    L->shard_len = xcalloc(L->num_shards, sizeof(int64_t), "shard lengths");
    L->longer_warned = xcalloc(L->num_shards, 1, "shard length warnings");
    int missing = 0;
    for (int i = 0; i < L->num_shards; i++) {
        int64_t n = L->have_manifest ? manifest_shard_samples(&L->manifest, L->shards[i]) : -1;
        if (n < 0) n = wds_count_samples(L->shards[i]);  // not in the manifest: count from headers
        if (n < 0) {  // it will yield one empty position, counted as an unreadable shard
            if (missing++ < L->cfg.warn_limit) warn("data loader: shard %s is missing or unreadable: %s", L->shards[i], strerror(errno));
            n = 1;
        }
        L->shard_len[i] = n;
        L->total_samples += n;
    }
    if (missing == L->num_shards) fatal("data loader: none of the %d shards of '%s' can be read (first: %s)", L->num_shards, L->cfg.shards, L->shards[0]);
    free(mpath);
}

// The sample sources an epoch walks, in order: shard indices or file indices.
// Returns the count of entries in *order and the samples this rank's stream holds.
static int64_t epoch_order(const Loader *L, int64_t epoch, int64_t **order, int64_t *n_order) {
    int train = L->cfg.mode == LOADER_TRAIN, W = L->cfg.world_size, rank = L->cfg.rank;
    int64_t n = L->is_folder ? L->folder.num_files : L->num_shards;
    uint32_t *perm = xmalloc(sizeof(uint32_t) * (n ? n : 1), "epoch order");
    for (int64_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    if (train) {
        Rng r;
        rng_seed(&r, L->cfg.seed, 0x5348554646ULL + (uint64_t)epoch * 0x100000001ULL);  // "SHUFF" + epoch: same on all ranks
        rng_shuffle_u32(&r, perm, n);
    }
    // Train: every source on every rank (emit slices the stream). Eval: ImageFolder,
    // every W-th file; shards, every shard, and read_epoch keeps every W-th sample,
    // so any number of ranks sees each sample once.
    int sample_split = !train && !L->is_folder, file_split = !train && L->is_folder;
    int64_t cnt = 0, samples = 0;
    *order = xmalloc(sizeof(int64_t) * (n + 1), "rank order");
    for (int64_t i = file_split ? rank : 0; i < n; i += file_split ? W : 1) {
        (*order)[cnt++] = perm[i];
        samples += L->is_folder ? 1 : L->shard_len[perm[i]];
    }
    if (sample_split) samples = samples > rank ? (samples - rank + W - 1) / W : 0;
    free(perm);
    *n_order = cnt;
    return samples;
}

// Steps of an epoch, the same on every rank in train mode; *positions: the
// length of the numbered stream (train: steps * G, the same on every rank).
static int64_t epoch_steps(const Loader *L, int64_t epoch, int64_t *positions) {
    int64_t B = L->cfg.batch_size, *order, n;
    int64_t s = epoch_order(L, epoch, &order, &n);
    free(order);
    if (L->cfg.mode == LOADER_EVAL) {
        *positions = L->cfg.drop_last ? s / B * B : s;
        return L->cfg.drop_last ? s / B : (s + B - 1) / B;
    }
    *positions = s / L->stride * L->stride;
    return s / L->stride;
}

// ---- reader thread -----------------------------------------------------------------

// The RNG stream of the sample at position pos. Train passes rank 0, so a sample
// augments alike whichever rank owns it; eval numbers positions per rank.
static uint64_t sample_stream(int64_t epoch, int rank, int64_t pos) {
    uint64_t s = (uint64_t)epoch * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)rank << 48);
    return splitmix64(&s) + (uint64_t)pos;
}

// Shards open for reading owned or replayed images by offset. A shuffle buffer
// spans several shards, so one open file would be reopened at every switch.
enum { OPEN_SHARDS = 4 };
typedef struct {
    const char *path;      // a shard name of the loader (compared by pointer), NULL: free
    int fd;
    uint64_t used;
} OpenShard;

typedef struct {
    Loader *L;
    int64_t epoch, pos, npos, steps, skip_until, seq_base, first_step;
    OpenShard open[OPEN_SHARDS];
    uint64_t tick;
} ReaderState;

static void item_free(WorkItem *it) {
    free(it->data);
    free(it->where);
    it->data = NULL;
    it->where = NULL;
}

// The shard's descriptor from the cache, opening it in place of the least recently used.
static int shard_fd(ReaderState *rs, const char *path) {
    OpenShard *victim = &rs->open[0];
    for (int i = 0; i < OPEN_SHARDS; i++) {
        OpenShard *o = &rs->open[i];
        if (o->path == path) {
            o->used = ++rs->tick;
            if (o->fd < 0) o->fd = open(path, O_RDONLY | O_CLOEXEC);  // a failed open is not kept as the answer
            return o->fd;
        }
        if (o->used < victim->used) victim = o;
    }
    if (victim->path && victim->fd >= 0) close(victim->fd);
    victim->path = path;
    victim->fd = open(path, O_RDONLY | O_CLOEXEC);
    victim->used = ++rs->tick;
    return victim->fd;
}

static void close_shards(ReaderState *rs) {
    for (int i = 0; i < OPEN_SHARDS; i++)
        if (rs->open[i].path && rs->open[i].fd >= 0) close(rs->open[i].fd);
    memset(rs->open, 0, sizeof rs->open);
}

static int read_at(int fd, uint8_t *buf, size_t len, int64_t off) {
    while (len > 0) {
        ssize_t got = pread(fd, buf, len, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return -1;
        buf += got, len -= (size_t)got, off += got;
    }
    return 0;
}

// An item whose bytes were not read with its header (a replay, or a sample of this
// rank seen while the other ranks' are dropped): fetch them now.
static void load_deferred(ReaderState *rs, WorkItem *it) {
    if (it->lazy_offset < 0) {  // an ImageFolder file
        if (image_file_read(it->lazy_shard, &it->data, &it->len) != 0) {
            it->skip = SKIP_UNREADABLE_SHARD;
            snprintf(it->detail, sizeof it->detail, "%s", strerror(errno));
        }
        return;
    }
    int fd = shard_fd(rs, it->lazy_shard);
    it->data = xmalloc(it->len + 1, "image bytes");
    if (fd < 0 || read_at(fd, it->data, it->len, it->lazy_offset) != 0) {
        it->skip = SKIP_TRUNCATED_TAR;
        snprintf(it->detail, sizeof it->detail, "image bytes unreadable by offset");
    }
}

// Number the item and queue it. Positions past the plan, before a restored cursor,
// or in another rank's slots are dropped (and counted by nobody here).
static void emit(ReaderState *rs, WorkItem *it) {
    Loader *L = rs->L;
    int64_t B = L->cfg.batch_size, pos = rs->pos, slot = pos % L->stride - L->own_first;
    if (pos >= rs->npos || pos < rs->skip_until || slot < 0 || slot >= B) {
        rs->pos += pos < rs->npos;
        item_free(it);
        return;
    }
    rs->pos++;
    if (it->lazy_shard && it->skip < 0) load_deferred(rs, it);
    int train = L->cfg.mode == LOADER_TRAIN;
    it->epoch = rs->epoch;
    it->pos = pos;
    it->step = pos / L->stride;
    it->seq = rs->seq_base + it->step - rs->first_step;
    it->slot = (int)slot;
    // Train: a function of the global position only, the same whichever rank owns it.
    it->stream = sample_stream(rs->epoch, train ? 0 : L->cfg.rank, pos);
    int64_t left = rs->npos - it->step * L->stride - L->own_first;
    it->expected = (int)(left < B ? left : B);
    it->last_in_epoch = it->step == rs->steps - 1;
    pthread_mutex_lock(&L->mu);
    while (L->qcount == L->qcap && !L->stop) pthread_cond_wait(&L->cv_space, &L->mu);
    if (L->stop) {
        pthread_mutex_unlock(&L->mu);
        item_free(it);
        return;
    }
    L->queue[(L->qhead + L->qcount++) % L->qcap] = *it;
    pthread_cond_signal(&L->cv_queue);
    pthread_mutex_unlock(&L->mu);
}

static char *where_of(const char *shard, const char *key) {
    size_t n = strlen(shard) + strlen(key) + 8;
    char *s = xmalloc(n, "sample name");
    snprintf(s, n, "%s key %s", shard, key);
    return s;
}

// Shuffle buffer bounded in bytes of encoded data: once full, each new sample
// swaps with a random resident, which goes out.
typedef struct {
    WorkItem *items;
    int n, cap;
    size_t bytes, limit;
    Rng rng;
} ShuffleBuffer;

// What an item weighs in the shuffle buffer. A skipped item weighs a fixed amount, not
// its length: the first pass and a resume's replay (which seeks over image data and learns
// of a cut member later) know different lengths for it, and the eviction order must not
// differ. Not 0 either: a shard of skipped samples must still be evicted, not held whole.
static size_t shuffle_weight(const WorkItem *it) { return it->skip >= 0 ? sizeof(WorkItem) : it->len; }

static void shuffle_push(ReaderState *rs, ShuffleBuffer *sb, WorkItem *it) {
    if (sb->limit == 0) { emit(rs, it); return; }
    if (sb->n == sb->cap) {
        sb->cap = sb->cap ? 2 * sb->cap : 256;
        sb->items = realloc(sb->items, sb->cap * sizeof(WorkItem));
        if (!sb->items) fatal("out of memory in the shuffle buffer");
    }
    sb->items[sb->n++] = *it;
    sb->bytes += shuffle_weight(it);
    while (sb->bytes > sb->limit && sb->n > 1) {
        int j = (int)rng_below(&sb->rng, sb->n);
        WorkItem out = sb->items[j];
        sb->items[j] = sb->items[--sb->n];
        sb->bytes -= shuffle_weight(&out);
        emit(rs, &out);
    }
}

static void shuffle_drain(ReaderState *rs, ShuffleBuffer *sb) {
    while (sb->n > 0) {
        int j = (int)rng_below(&sb->rng, sb->n);
        WorkItem out = sb->items[j];
        sb->items[j] = sb->items[--sb->n];
        sb->bytes -= shuffle_weight(&out);
        emit(rs, &out);
    }
}

static void read_epoch(ReaderState *rs) {
    Loader *L = rs->L;
    int64_t *order, n;
    epoch_order(L, rs->epoch, &order, &n);
    ShuffleBuffer sb = {0};
    sb.limit = L->cfg.mode == LOADER_TRAIN && !L->is_folder ? L->cfg.shuffle_bytes : 0;
    rng_seed(&sb.rng, L->cfg.seed, 0x42554646ULL + ((uint64_t)rs->epoch << 20));  // the same on every rank
    // Eval over shards: each rank keeps every world_size-th sample (see epoch_order).
    int sample_stride = L->cfg.mode == LOADER_EVAL && !L->is_folder ? L->cfg.world_size : 1;
    int64_t sample_index = 0;
    for (int64_t i = 0; i < n && !L->stop && rs->pos < rs->npos; i++) {
        WorkItem it = {0};
        it.skip = -1;
        if (L->is_folder) {
            const char *path = L->folder.paths[order[i]];
            it.label = L->folder.labels[order[i]];
            it.where = xstrdup(path);
            const char *dot = strrchr(path, '.');
            it.ext = dot && (dot[1] == 'p' || dot[1] == 'P') ? IMG_PNG : IMG_JPEG;
            if (it.label < 0 && L->cfg.require_labels) {
                it.skip = SKIP_MISSING_PART;
                snprintf(it.detail, sizeof it.detail, "no label");
            } else if (L->sliced) {  // read by its owner only, at emit
                it.lazy_shard = path;
                it.lazy_offset = -1;
            } else if (image_file_read(path, &it.data, &it.len) != 0) {
                it.skip = SKIP_UNREADABLE_SHARD;
                snprintf(it.detail, sizeof it.detail, "%s", strerror(errno));
            }
            emit(rs, &it);
            continue;
        }
        const char *shard = L->shards[order[i]];
        WdsReader wr;
        if (wds_open(&wr, shard) != 0) {
            if (sample_stride > 1 && sample_index++ % sample_stride != L->cfg.rank) continue;
            it.skip = SKIP_UNREADABLE_SHARD;
            it.where = where_of(shard, "(whole shard)");
            snprintf(it.detail, sizeof it.detail, "%s", strerror(errno));
            shuffle_push(rs, &sb, &it);
            continue;
        }
        WdsSample s = {0};
        int64_t in_shard = 0;
        // Replaying to a restored cursor, or slicing over ranks: samples dropped before the
        // cursor or owned by another rank need no bytes, the others are read at emit. (A gzip
        // stream cannot seek back for the bytes later: there, they are inflated and freed.)
        while (!L->stop && (wr.lazy_images = !wr.tar.gz && (L->sliced || rs->pos < rs->skip_until),
                            wds_next(&wr, &s) == 1)) {
            in_shard++;
            if (sample_stride > 1 && sample_index++ % sample_stride != L->cfg.rank) continue;
            WorkItem w = {0};
            w.skip = s.skip;
            memcpy(w.detail, s.detail, sizeof w.detail);
            w.where = where_of(shard, s.key);
            w.label = s.label;
            if (w.skip < 0 && !s.has_image) w.skip = SKIP_MISSING_PART, snprintf(w.detail, sizeof w.detail, "no .jpg/.jpeg/.png");
            if (w.skip < 0 && !s.has_label && L->cfg.require_labels)
                w.skip = SKIP_MISSING_PART, snprintf(w.detail, sizeof w.detail, "no .cls");
            w.data = s.image, w.len = s.image_len, w.ext = s.image_ext;
            if (!s.image && s.has_image) w.lazy_shard = shard, w.lazy_offset = s.image_offset;
            s.image = NULL;
            if (w.skip >= 0) {  // a skipped sample is only counted: do not hold its bytes in the shuffle buffer
                free(w.data);
                w.data = NULL;
                w.lazy_shard = NULL;
            }
            shuffle_push(rs, &sb, &w);
        }
        wds_sample_clear(&s);
        wds_close(&wr);
        // The plan counts the manifest's samples: a shard holding more is not read to its end.
        if (in_shard > L->shard_len[order[i]] && !L->longer_warned[order[i]] && !L->stop) {
            L->longer_warned[order[i]] = 1;
            warn("data loader: shard %s holds %lld samples, its manifest says %lld: an epoch reads the manifest's "
                 "count, so samples are left out; regenerate the manifest (make_shards writes it)", shard,
                 (long long)in_shard, (long long)L->shard_len[order[i]]);
        }
    }
    shuffle_drain(rs, &sb);
    free(sb.items);
    free(order);
    // Fewer samples than planned (a truncated shard): fill the plan with empty slots.
    while (rs->pos < rs->npos && !L->stop) {
        WorkItem it = {0};
        it.skip = SKIP_FILLER;
        emit(rs, &it);
    }
}

static void lower_priority(int inc) {
    if (inc > 0) setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), getpriority(PRIO_PROCESS, 0) + inc);
}

static void *reader_main(void *arg) {
    Loader *L = arg;
    lower_priority(L->cfg.nice);
    ReaderState rs = {.L = L};
    for (int64_t epoch = L->start_epoch; !L->stop; epoch++) {
        rs.epoch = epoch;
        rs.pos = 0;
        rs.steps = epoch_steps(L, epoch, &rs.npos);
        if (rs.steps == 0 && L->cfg.mode == LOADER_TRAIN)
            fatal("data loader: epoch %lld gives no full global batch of %d x %d ranks (too few samples)",
                  (long long)epoch, L->cfg.batch_size, L->cfg.world_size);
        rs.first_step = epoch == L->start_epoch ? L->start_step : 0;
        if (rs.first_step >= rs.steps) continue;
        rs.skip_until = rs.first_step * L->stride;
        read_epoch(&rs);
        rs.seq_base += rs.steps - rs.first_step;
    }
    close_shards(&rs);
    return NULL;
}

// ---- decode threads -----------------------------------------------------------------

static void compact(Loader *L, RingBatch *b) {
    size_t nf = L->sample_floats;
    int n = 0;
    for (int i = 0; i < b->expected; i++) {
        if (!b->ok[i]) continue;
        if (n != i) {
            for (int v = 0; v < L->nviews; v++) {
                memmove(b->view[v] + n * nf, b->view[v] + i * nf, nf * sizeof(float));
                memmove(b->clean[v] + n * nf, b->clean[v] + i * nf, nf * sizeof(float));
            }
            b->labels[n] = b->labels[i];
        }
        n++;
    }
    b->n = n;
}

static void *worker_main(void *arg) {
    Loader *L = arg;
    lower_priority(L->cfg.nice);
    TransformScratch ts = {0};
    for (;;) {
        pthread_mutex_lock(&L->mu);
        while (L->qcount == 0 && !L->stop) pthread_cond_wait(&L->cv_queue, &L->mu);
        if (L->stop) { pthread_mutex_unlock(&L->mu); break; }
        WorkItem it = L->queue[L->qhead];
        L->qhead = (L->qhead + 1) % L->qcap;
        L->qcount--;
        pthread_cond_signal(&L->cv_space);
        RingBatch *b = &L->ring[it.seq % L->nring];
        while (b->seq != it.seq && !L->stop) pthread_cond_wait(&L->cv_ring, &L->mu);
        pthread_mutex_unlock(&L->mu);
        if (L->stop) { item_free(&it); break; }

        int slot = it.slot, why = it.skip;
        if (why < 0) {
            Rng rng;
            rng_seed(&rng, L->cfg.seed, it.stream);
            float *norm[2], *clean[2];
            for (int v = 0; v < 2; v++) {
                norm[v] = b->view[v] ? b->view[v] + slot * L->sample_floats : NULL;
                clean[v] = b->clean[v] ? b->clean[v] + slot * L->sample_floats : NULL;
            }
            why = transform_sample(&L->cfg, it.data, it.len, it.ext, &rng, L->nviews, norm, clean, &ts, it.detail,
                                   sizeof it.detail);
        }
        pthread_mutex_lock(&L->mu);
        if (why != SKIP_FILLER) b->seen++;
        if (why >= 0 && why < SKIP_NUM_REASONS) {
            b->skips[why]++;
            if (L->warned++ < L->cfg.warn_limit)
                warn("data loader: skipped %s: %s (%s)%s", it.where ? it.where : "?", skip_names[why], it.detail,
                     L->warned == L->cfg.warn_limit ? "; further skips are counted, not printed" : "");
        }
        b->ok[slot] = why < 0;
        b->labels[slot] = it.label;
        b->epoch = it.epoch, b->step = it.step, b->expected = it.expected, b->last_in_epoch = it.last_in_epoch;
        int complete = ++b->done == b->expected;
        pthread_mutex_unlock(&L->mu);
        item_free(&it);
        if (complete) {
            compact(L, b);
            pthread_mutex_lock(&L->mu);
            b->ready = 1;
            pthread_cond_broadcast(&L->cv_ready);
            pthread_mutex_unlock(&L->mu);
        }
    }
    transform_scratch_free(&ts);
    return NULL;
}

// ---- public ---------------------------------------------------------------------------

Loader *loader_open(const LoaderConfig *cfg) {
    Loader *L = xcalloc(1, sizeof *L, "loader");
    L->cfg = *cfg;
    LoaderConfig *c = &L->cfg;
    int has_shards = c->shards && *c->shards, has_folder = c->image_folder && *c->image_folder;
    int has_list = c->image_list && *c->image_list;
    if (has_shards + has_folder + has_list != 1) fatal("data loader: set exactly one of shards, image_folder and image_list");
    if (c->channels != 1 && c->channels != 3) fatal("data loader: channels must be 1 or 3, not %d", c->channels);
    if (c->batch_size < 1 || c->image_size < 1) fatal("data loader: batch_size and image_size must be positive");
    if (c->world_size < 1 || c->rank < 0 || c->rank >= c->world_size)
        fatal("data loader: rank %d out of range for world_size %d", c->rank, c->world_size);
    if (c->num_threads < 1) c->num_threads = 1;
    if (c->queue_batches < 1) c->queue_batches = 1;
    if (c->eval_resize <= 0) c->eval_resize = (float)(int)(c->image_size / 0.875);
    if (c->max_pixels <= 0) c->max_pixels = 64000000;
    if (c->channels == 1) c->mean[1] = c->mean[2] = c->mean[0], c->std[1] = c->std[2] = c->std[0];
    for (int i = 0; i < c->channels; i++)
        if (!(c->std[i] > 0)) fatal("data loader: std[%d] must be positive", i);
    if (has_folder || has_list) {
        c->shards = NULL;
        c->image_folder = has_folder ? xstrdup(c->image_folder) : NULL;
        c->image_list = has_list ? xstrdup(c->image_list) : NULL;
        if (has_list) image_list_open(&L->folder, c->image_list);
        else if (c->folder_flat) image_folder_open_flat(&L->folder, c->image_folder);
        else image_folder_open(&L->folder, c->image_folder);
        L->is_folder = 1;
        L->total_samples = L->folder.num_files;
    } else {
        c->shards = xstrdup(c->shards);
        c->image_folder = c->image_list = NULL;
        open_shards(L);
    }
    c->manifest = NULL;
    L->nviews = c->two_views && c->mode == LOADER_TRAIN ? 2 : 1;
    L->sample_floats = (size_t)c->channels * c->image_size * c->image_size;
    int train = c->mode == LOADER_TRAIN;
    L->stride = (int64_t)c->batch_size * (train ? c->world_size : 1);
    L->own_first = train ? (int64_t)c->rank * c->batch_size : 0;
    L->sliced = train && c->world_size > 1;
    int64_t npos, steps0 = epoch_steps(L, 0, &npos);
    L->empty_eval = steps0 == 0 && c->mode == LOADER_EVAL;
    if (steps0 == 0 && train)
        fatal("data loader: %lld samples give no full global batch of %d x %d ranks", (long long)L->total_samples,
              c->batch_size, c->world_size);
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->cv_queue, NULL);
    pthread_cond_init(&L->cv_space, NULL);
    pthread_cond_init(&L->cv_ring, NULL);
    pthread_cond_init(&L->cv_ready, NULL);
    L->held_seq = -1;
    return L;
}

static void start_pipeline(Loader *L) {
    LoaderConfig *c = &L->cfg;
    int B = c->batch_size;
    L->nring = c->queue_batches + 1;  // +1: the batch the trainer holds
    L->ring = xcalloc(L->nring, sizeof(RingBatch), "batch ring");
    for (int i = 0; i < L->nring; i++) {
        RingBatch *b = &L->ring[i];
        b->seq = i;
        for (int v = 0; v < L->nviews; v++) {
            b->view[v] = xmalloc(sizeof(float) * B * L->sample_floats, "batch images");
            b->clean[v] = xmalloc(sizeof(float) * B * L->sample_floats, "batch clean images");
        }
        b->labels = xcalloc(B, sizeof(int32_t), "batch labels");
        b->ok = xcalloc(B, 1, "batch flags");
    }
    L->qcap = L->nring * B + c->num_threads;
    L->queue = xcalloc(L->qcap, sizeof(WorkItem), "work queue");
    L->next_epoch = L->start_epoch, L->next_step = L->start_step;
    L->workers = xcalloc(c->num_threads, sizeof(pthread_t), "decode threads");
    if (pthread_create(&L->reader, NULL, reader_main, L) != 0) fatal("data loader: cannot start the reader thread");
    for (int i = 0; i < c->num_threads; i++)
        if (pthread_create(&L->workers[i], NULL, worker_main, L) != 0) fatal("data loader: cannot start decode thread %d", i);
    L->started = 1;
}

int loader_next(Loader *L, Batch *out) {
    if (!L->started && !L->empty_eval) start_pipeline(L);  // nothing to read: no reader spinning over empty epochs
    pthread_mutex_lock(&L->mu);
    if (L->held_seq >= 0) {  // hand the previous batch's slot back
        RingBatch *h = &L->ring[L->held_seq % L->nring];
        h->seq += L->nring;
        h->done = h->ready = h->seen = 0;
        memset(h->skips, 0, sizeof h->skips);
        L->held_seq = -1;
        pthread_cond_broadcast(&L->cv_ring);
    }
    if (L->eof_pending || L->empty_eval) {
        L->eof_pending = 0;
        pthread_mutex_unlock(&L->mu);
        return 0;
    }
    RingBatch *b = &L->ring[L->next_seq % L->nring];
    while (!(b->seq == L->next_seq && b->ready)) pthread_cond_wait(&L->cv_ready, &L->mu);
    L->held_seq = L->next_seq++;
    int64_t skipped = 0;
    L->seen += b->seen;
    for (int i = 0; i < SKIP_NUM_REASONS; i++) skipped += L->skipped[i] += b->skips[i];
    int64_t seen = L->seen;
    L->next_epoch = b->epoch, L->next_step = b->step + 1;
    if (b->last_in_epoch) {
        L->next_epoch++, L->next_step = 0;
        if (L->cfg.mode == LOADER_EVAL) L->eof_pending = 1;
    }
    pthread_mutex_unlock(&L->mu);
    if (seen >= 50 && skipped > L->cfg.max_skip_fraction * seen)
        fatal("data loader: %lld of %lld samples skipped (%.1f%%), above max_skip_fraction %.3f; see the warnings "
              "above for the shards and keys", (long long)skipped, (long long)seen, 100.0 * skipped / seen,
              L->cfg.max_skip_fraction);
    out->n = b->n;
    out->channels = L->cfg.channels;
    out->height = out->width = L->cfg.image_size;
    out->view1 = b->view[0];
    out->clean1 = b->clean[0];
    out->view2 = L->nviews == 2 ? b->view[1] : NULL;
    out->clean2 = L->nviews == 2 ? b->clean[1] : NULL;
    out->labels = b->labels;
    out->epoch = b->epoch;
    out->step = b->step;
    return 1;
}

void loader_close(Loader *L) {
    if (!L) return;
    if (L->started) {
        pthread_mutex_lock(&L->mu);
        L->stop = 1;
        pthread_cond_broadcast(&L->cv_queue);
        pthread_cond_broadcast(&L->cv_space);
        pthread_cond_broadcast(&L->cv_ring);
        pthread_mutex_unlock(&L->mu);
        pthread_join(L->reader, NULL);
        for (int i = 0; i < L->cfg.num_threads; i++) pthread_join(L->workers[i], NULL);
        for (int i = 0; i < L->qcount; i++) item_free(&L->queue[(L->qhead + i) % L->qcap]);
        for (int i = 0; i < L->nring; i++) {
            RingBatch *b = &L->ring[i];
            for (int v = 0; v < 2; v++) free(b->view[v]), free(b->clean[v]);
            free(b->labels);
            free(b->ok);
        }
        free(L->ring);
        free(L->queue);
        free(L->workers);
    }
    if (L->is_folder) image_folder_free(&L->folder);
    else shard_list_free(L->shards, L->num_shards);
    if (L->have_manifest) manifest_free(&L->manifest);
    free(L->shard_len);
    free(L->longer_warned);
    free((char *)L->cfg.shards);
    free((char *)L->cfg.image_folder);
    free((char *)L->cfg.image_list);
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->cv_queue);
    pthread_cond_destroy(&L->cv_space);
    pthread_cond_destroy(&L->cv_ring);
    pthread_cond_destroy(&L->cv_ready);
    free(L);
}

int64_t loader_num_samples(const Loader *L) { return L->total_samples; }

int64_t loader_unlabeled_samples(const Loader *L) {
    if (L->is_folder) return image_folder_unlabeled(&L->folder);
    if (L->have_manifest && L->manifest.num_classes == 0) return L->total_samples;  // written without labels
    if (L->have_manifest) return 0;
    int64_t missing = 0;
    for (int i = 0; i < L->num_shards; i++) {
        int64_t labelled, n = wds_count_labelled(L->shards[i], &labelled);
        if (n > 0) missing += n - labelled;
    }
    return missing;
}

int64_t loader_steps_per_epoch(const Loader *L) {
    int64_t npos;
    return epoch_steps(L, L->started ? L->next_epoch : L->start_epoch, &npos);
}

int loader_num_classes(const Loader *L) {
    if (L->is_folder) return L->folder.num_classes;
    return L->have_manifest && L->manifest.num_classes > 0 ? L->manifest.num_classes : -1;
}

const char *loader_class_name(const Loader *L, int i) {
    if (i < 0 || i >= loader_num_classes(L)) return NULL;
    return L->is_folder ? L->folder.class_names[i] : L->manifest.class_names[i];
}

int64_t loader_skipped(const Loader *L, SkipReason why) {
    if (why >= SKIP_NUM_REASONS) return 0;
    pthread_mutex_lock((pthread_mutex_t *)&L->mu);
    int64_t n = L->skipped[why];
    pthread_mutex_unlock((pthread_mutex_t *)&L->mu);
    return n;
}

// ---- cursor ---------------------------------------------------------------------------

typedef struct {
    uint64_t magic, seed;
    int64_t epoch, step, seen;
    int64_t skipped[SKIP_NUM_REASONS];
    int32_t batch_size, world_size, rank, eof_pending;
} Cursor;

static const uint64_t CURSOR_MAGIC = 0x31525355434C4443ULL;  // "CDLCUSR1"

size_t loader_cursor_size(void) { return sizeof(Cursor); }

void loader_cursor_save(const Loader *L, void *buf) {
    Cursor c = {0};
    c.magic = CURSOR_MAGIC;
    c.seed = L->cfg.seed;
    pthread_mutex_lock((pthread_mutex_t *)&L->mu);
    c.epoch = L->started ? L->next_epoch : L->start_epoch;
    c.step = L->started ? L->next_step : L->start_step;
    c.seen = L->seen;
    memcpy(c.skipped, L->skipped, sizeof c.skipped);
    c.eof_pending = L->eof_pending;
    pthread_mutex_unlock((pthread_mutex_t *)&L->mu);
    c.batch_size = L->cfg.batch_size, c.world_size = L->cfg.world_size, c.rank = L->cfg.rank;
    memcpy(buf, &c, sizeof c);
}

// Train: the cursor's step is global, so any rank of any world size with the same seed and
// global batch continues the stream. Eval numbers each rank's own stream: the same rank only.
int loader_cursor_restore(Loader *L, const void *buf) {
    Cursor c;
    memcpy(&c, buf, sizeof c);
    if (c.magic != CURSOR_MAGIC) { warn("data loader: cursor blob is not a loader cursor"); return 0; }
    if (L->started) { warn("data loader: cursor restore must come before the first loader_next"); return 0; }
    int fits = c.seed == L->cfg.seed;
    if (L->cfg.mode == LOADER_TRAIN)
        fits &= (int64_t)c.batch_size * c.world_size == (int64_t)L->cfg.batch_size * L->cfg.world_size;
    else
        fits &= c.batch_size == L->cfg.batch_size && c.world_size == L->cfg.world_size && c.rank == L->cfg.rank;
    if (!fits) {
        warn("data loader: cursor was saved with seed %llu batch %d rank %d/%d, the loader has seed %llu batch %d "
             "rank %d/%d%s", (unsigned long long)c.seed, c.batch_size, c.rank, c.world_size,
             (unsigned long long)L->cfg.seed, L->cfg.batch_size, L->cfg.rank, L->cfg.world_size,
             L->cfg.mode == LOADER_TRAIN ? " (train: the seed and the global batch must match)" : "");
        return 0;
    }
    L->start_epoch = c.epoch, L->start_step = c.step;
    L->seen = c.seen;
    memcpy(L->skipped, c.skipped, sizeof c.skipped);
    L->eof_pending = c.eof_pending;
    return 1;
}

int loader_cursor_merge(const void *cursors, int n, void *out) {
    Cursor m, c;
    if (n < 1) { warn("data loader: no cursors to merge"); return 0; }
    memcpy(&m, cursors, sizeof m);
    for (int i = 0; i < n; i++) {
        memcpy(&c, (const char *)cursors + (size_t)i * sizeof c, sizeof c);
        if (c.magic != CURSOR_MAGIC || c.seed != m.seed ||
            (int64_t)c.batch_size * c.world_size != (int64_t)m.batch_size * m.world_size) {
            warn("data loader: cursor %d of %d is not a loader cursor of the same seed and global batch", i, n);
            return 0;
        }
        if (c.epoch != m.epoch || c.step != m.step || c.eof_pending != m.eof_pending) {
            warn("data loader: cannot merge cursors: cursor %d is at epoch %lld step %lld, cursor 0 at epoch %lld "
                 "step %lld", i, (long long)c.epoch, (long long)c.step, (long long)m.epoch, (long long)m.step);
            return 0;
        }
        if (i == 0) continue;
        m.seen += c.seen;
        for (int r = 0; r < SKIP_NUM_REASONS; r++) m.skipped[r] += c.skipped[r];
    }
    m.rank = 0;
    memcpy(out, &m, sizeof m);
    return 1;
}

void loader_cursor_clear_counts(void *buf) {
    Cursor c;
    memcpy(&c, buf, sizeof c);
    c.seen = 0;
    memset(c.skipped, 0, sizeof c.skipped);
    memcpy(buf, &c, sizeof c);
}
