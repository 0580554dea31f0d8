// ema_teacher.c: the EMA teacher (ema_teacher.h).
#include "ema_teacher.h"

#include <stdio.h>
#include <string.h>

#define TEACHER_PREFIX "pretrain.teacher."

void ema_teacher_register(EmaTeacher *e, ParamTable *t, const VitConfig *vc, int proj_hidden, int proj_dim) {
    memset(e, 0, sizeof *e);
    // The same layout as the student's encoder and projector, so each teacher
    // tensor has one student tensor to follow.
    e->first = t->count;
    vit_register_prefixed(&e->vit, t, vc, TEACHER_PREFIX);
    projector_register(&e->proj, t, TEACHER_PREFIX "projector.", vc->embed_dim, proj_hidden, proj_dim);
    e->last = t->count;
    e->src = xcalloc(e->last - e->first, sizeof(int), "teacher map");
    for (int i = e->first; i < e->last; i++) {
        t->info[i].frozen = 1;
        const char *own = t->info[i].name + strlen(TEACHER_PREFIX);
        char student[160];
        snprintf(student, sizeof student, "%s%s", strncmp(own, "projector.", 10) ? "" : "pretrain.", own);
        int src = params_find(t, student);
        if (src < 0) fatal("objective: the teacher's %s has no student tensor %s", t->info[i].name, student);
        e->src[i - e->first] = src;
    }
}

void ema_teacher_bind(EmaTeacher *e) {
    vit_bind(&e->vit);
    projector_bind(&e->proj, e->vit.params);
}

void ema_teacher_update(EmaTeacher *e, float momentum) {
    const ParamTable *t = e->vit.params;
    for (int i = e->first; i < e->last; i++) {
        float *dst = params_data(t, i);
        const float *src = params_data(t, e->src[i - e->first]);
        long n = (long)params_numel(t, i);
#pragma omp parallel for schedule(static) if (n > 65536)
        for (long j = 0; j < n; j++) dst[j] = momentum * dst[j] + (1.0f - momentum) * src[j];
    }
}

void ema_teacher_allocate(EmaTeacher *e, int max_batch) { vit_allocate_forward_activations(&e->vit, max_batch); }

void ema_teacher_layout(EmaTeacher *e, Arena *acts, int B) {
    projector_layout(&e->proj, acts, NULL, B);
    e->row_start = arena_bytes(acts, sizeof(int) * ((size_t)B + 1));
    e->row_index = arena_bytes(acts, sizeof(int32_t) * (size_t)B);
}

// Each image's CLS row; a batch of B reads the first B.
void ema_teacher_rows_init(EmaTeacher *e, int max_batch) {
    for (int b = 0; b <= max_batch; b++) {
        e->row_start[b] = b;
        if (b < max_batch) e->row_index[b] = 0;
    }
}

void ema_teacher_forward(EmaTeacher *e, const float *view2, int B) {
    Vit *tv = &e->vit;
    e->rows = (RowSet){e->row_start, e->row_index, B};  // CLS rows of B images
    vit_set_last_rows(tv, &e->rows);
    vit_forward(tv, view2, NULL, B);
    vit_set_last_rows(tv, NULL);
    projector_forward(&e->proj, tv->final, B, tv->T);
}

double ema_teacher_forward_flops(const EmaTeacher *e, int B) {
    const Vit *v = &e->vit;
    double D = v->D, T = v->T, Hd = v->bdims.hidden;
    return B * (vit_forward_flops_per_image(&v->cfg) - block_forward_flops(T, T, D, Hd) + block_forward_flops(T, 1, D, Hd)) +
           projector_forward_flops(&e->proj, B);
}

void ema_teacher_release(EmaTeacher *e) {
    vit_release(&e->vit);  // its tensors live in the student's table
    xfree(e->src);
}
