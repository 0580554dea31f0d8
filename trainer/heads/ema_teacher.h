// ema_teacher.h: the EMA teacher (MoCo v3 / MSN). A frozen copy of the encoder
// and the projector, "pretrain.teacher.*", at the end of the student's table;
// after each update teacher = m * teacher + (1 - m) * student. It runs forward
// only, on view2, and its projections are the InfoNCE keys.
#pragma once
#include <stdint.h>

#include "common.h"
#include "contrastive_head.h"
#include "params.h"
#include "vit.h"

typedef struct {
    Vit vit;
    Projector proj;
    int first, last;                  // its tensors in the table: [first, last), frozen
    int *src;                         // src[i]: the student tensor tensor first + i follows
    int *row_start;                   // [B+1]: its last block keeps CLS only
    int32_t *row_index;               // [B]
    RowSet rows;
} EmaTeacher;

// After the student's encoder and projector are registered in t.
void ema_teacher_register(EmaTeacher *e, ParamTable *t, const VitConfig *vc, int proj_hidden, int proj_dim);
void ema_teacher_bind(EmaTeacher *e);
// teacher = momentum * teacher + (1 - momentum) * student (0 copies the student)
void ema_teacher_update(EmaTeacher *e, float momentum);
// Its encoder's forward activations and, in the objective's arena, its projector's.
void ema_teacher_allocate(EmaTeacher *e, int max_batch);
void ema_teacher_layout(EmaTeacher *e, Arena *acts, int B);
void ema_teacher_rows_init(EmaTeacher *e, int max_batch);
// view2 [B,C,H,W] -> the keys e->proj.z [B,O]
void ema_teacher_forward(EmaTeacher *e, const float *view2, int B);
double ema_teacher_forward_flops(const EmaTeacher *e, int B);
void ema_teacher_release(EmaTeacher *e);
