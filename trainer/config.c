// config.c: the schema table of config.h turned into a YAML reader (libyaml's
// document API, so every value keeps its line), --key=value overrides, the
// cross-key rules, the YAML writer and --help.
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "common.h"

// ---- the schema as data -----------------------------------------------------

typedef enum { T_INT, T_FLOAT, T_BOOL, T_STR, T_ENUM, T_FLOATS, T_GROUP } KeyType;

typedef struct {
    const char *name;  // for T_GROUP: the group title
    KeyType type;
    const char *def, *allowed, *help;
    size_t offset, size;
} KeyDef;

#define ROW_KEY_(name, type, def, allowed, help) \
    {#name, T_##type, def, allowed, help, offsetof(Config, name), sizeof(((Config *)0)->name)},
#define ROW_GROUP_(title) {title, T_GROUP, "", "", "", 0, 0},
static const KeyDef ROWS[] = {CONFIG_KEYS(ROW_KEY_, ROW_GROUP_)};

// KEYS[k] is the row of key index k (CFG_*); GROUP[k] the title of its group.
static const KeyDef *KEYS[CONFIG_NUM_KEYS];
static const char *GROUP[CONFIG_NUM_KEYS];

static void schema_init(void) {
    static int done = 0;
    if (done) return;
    const char *group = "";
    int k = 0;
    for (size_t r = 0; r < ARRAY_LEN(ROWS); r++) {
        if (ROWS[r].type == T_GROUP) {
            group = ROWS[r].name;
            continue;
        }
        KEYS[k] = &ROWS[r];
        GROUP[k] = group;
        k++;
    }
    done = 1;
}

static void *field(Config *cfg, int k) { return (char *)cfg + KEYS[k]->offset; }
static const void *cfield(const Config *cfg, int k) { return (const char *)cfg + KEYS[k]->offset; }

// Whether key k holds the same value in a and b.
static bool same_value(const Config *a, const Config *b, int k) {
    const void *pa = cfield(a, k), *pb = cfield(b, k);
    switch (KEYS[k]->type) {
    case T_INT: return *(const int *)pa == *(const int *)pb;
    case T_FLOAT: return *(const double *)pa == *(const double *)pb;
    case T_BOOL: return *(const bool *)pa == *(const bool *)pb;
    case T_STR:
    case T_ENUM: return strcmp(pa, pb) == 0;
    case T_FLOATS: {
        const ConfigFloats *la = pa, *lb = pb;
        bool same = la->n == lb->n;
        for (int i = 0; same && i < la->n; i++) same = la->v[i] == lb->v[i];
        return same;
    }
    default: return true;
    }
}

static int find_key(const char *name) {
    for (int k = 0; k < CONFIG_NUM_KEYS; k++)
        if (strcmp(KEYS[k]->name, name) == 0) return k;
    return -1;
}

static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    int row[128];
    if (lb >= ARRAY_LEN(row)) return INT_MAX;
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int sub = diag + (a[i - 1] != b[j - 1]);  // NOLINT(clang-analyzer-core.UndefinedBinaryOperatorResult): a and b are NUL-terminated strings (sorted_words writes out[0] = 0 first)
            int best = sub < up + 1 ? sub : up + 1;
            row[j] = best < row[j - 1] + 1 ? best : row[j - 1] + 1;
            diag = up;
        }
    }
    return row[lb];
}

// The words of a snake_case name in sorted order, so that lr_min meets min_lr.
static void sorted_words(const char *name, char *out, size_t n) {
    char buf[128], *words[32];
    int nw = 0;
    snprintf(buf, sizeof buf, "%s", name);
    for (char *save = NULL, *w = strtok_r(buf, "_", &save); w && nw < 32; w = strtok_r(NULL, "_", &save))
        words[nw++] = w;
    for (int i = 1; i < nw; i++)
        for (int j = i; j > 0 && strcmp(words[j - 1], words[j]) > 0; j--) {
            char *t = words[j];
            words[j] = words[j - 1];
            words[j - 1] = t;
        }
    out[0] = 0;
    for (int i = 0; i < nw; i++) snprintf(out + strlen(out), n - strlen(out), "%s%s", i ? "_" : "", words[i]);
}

static const char *closest_key(const char *name) {
    char a[128], b[128];
    sorted_words(name, a, sizeof a);
    int best = INT_MAX;
    const char *out = KEYS[0]->name;
    for (int k = 0; k < CONFIG_NUM_KEYS; k++) {
        sorted_words(KEYS[k]->name, b, sizeof b);
        int d = edit_distance(name, KEYS[k]->name), dw = edit_distance(a, b) + 1;
        if (dw < d) d = dw;
        if (strlen(name) >= 3 && strstr(KEYS[k]->name, name) && d > 1) d = 1;  // "warmup" -> warmup_steps
        if (d < best) best = d, out = KEYS[k]->name;
    }
    return out;
}

// ---- allowed values: "[lo, hi)", "2 of [0, 1]", "1..3 of (0, inf)" ----------

typedef struct {
    double lo, hi;
    bool lo_open, hi_open;
    int min_len, max_len;  // FLOATS only
} Allowed;

static double parse_bound(const char *s, const char *end) {
    char tmp[64];
    size_t n = (size_t)(end - s);
    while (n && isspace((unsigned char)*s)) s++, n--;
    while (n && isspace((unsigned char)s[n - 1])) n--;
    if (n == 0 || n >= sizeof tmp) return NAN;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    if (strcmp(tmp, "inf") == 0) return INFINITY;
    if (strcmp(tmp, "-inf") == 0) return -INFINITY;
    char *e;
    double v = strtod(tmp, &e);
    return *e ? NAN : v;
}

// The table is code: a malformed "allowed" string is a programming error.
static Allowed parse_allowed(const KeyDef *d) {
    Allowed a = {-INFINITY, INFINITY, false, false, 1, 1};
    const char *s = d->allowed;
    if (d->type == T_FLOATS) {
        char *e;
        a.min_len = a.max_len = (int)strtol(s, &e, 10);
        if (strncmp(e, "..", 2) == 0) a.max_len = (int)strtol(e + 2, &e, 10);
        if (strncmp(e, " of ", 4) != 0 || a.min_len < 1 || a.max_len < a.min_len || a.max_len > CONFIG_LIST_MAX)
            fatal("config schema: key '%s' has allowed \"%s\"; expected \"N of RANGE\" or \"N..M of RANGE\" (N, M <= %d)",
                  d->name, d->allowed, CONFIG_LIST_MAX);
        s = e + 4;
    }
    const char *comma = strchr(s, ',');
    size_t len = strlen(s);
    if ((s[0] != '[' && s[0] != '(') || !comma || len < 5 || (s[len - 1] != ']' && s[len - 1] != ')'))
        fatal("config schema: key '%s' has allowed \"%s\"; expected a range like \"[0, 1)\"", d->name, d->allowed);
    a.lo_open = s[0] == '(';
    a.hi_open = s[len - 1] == ')';
    a.lo = parse_bound(s + 1, comma);
    a.hi = parse_bound(comma + 1, s + len - 1);
    if (isnan(a.lo) || isnan(a.hi) || a.lo > a.hi)
        fatal("config schema: key '%s' has a malformed range \"%s\"", d->name, d->allowed);
    return a;
}

static bool in_range(const Allowed *a, double v) {
    if (a->lo_open ? !(v > a->lo) : !(v >= a->lo)) return false;
    if (a->hi_open ? !(v < a->hi) : !(v <= a->hi)) return false;
    return true;
}

// ---- error messages -----------------------------------------------------------

// Where a value comes from: "file:line:col" or an argument like "--lr=x".
typedef struct {
    const char *where;
    int line, col;  // 1-based; 0 when there is no line (overrides)
    char *err;
    size_t errlen;
} Ctx;

static int fail(const Ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const Ctx *c, const char *fmt, ...) {
    if (!c->err || !c->errlen) return -1;
    int n = c->line > 0 ? snprintf(c->err, c->errlen, "%s:%d:%d: ", c->where, c->line, c->col)
                        : snprintf(c->err, c->errlen, "%s: ", c->where);
    if (n >= 0 && (size_t)n < c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);  // NOLINT(clang-analyzer-valist.Uninitialized): va_start above; a known analyser false positive
        va_end(ap);
    }
    return -1;
}

static const char *type_name(KeyType t) {
    switch (t) {
    case T_INT: return "an integer";
    case T_FLOAT: return "a number";
    case T_BOOL: return "true or false";
    case T_STR: return "a string";
    case T_ENUM: return "one of";
    case T_FLOATS: return "a list of numbers";
    default: return "?";
    }
}

// "expected an integer in [1, 64]" / "expected one of bilinear|bicubic" / ...
static void describe_expected(const KeyDef *d, char *buf, size_t n) {
    switch (d->type) {
    case T_INT:
    case T_FLOAT: snprintf(buf, n, "%s in %s", type_name(d->type), d->allowed); break;
    case T_ENUM: snprintf(buf, n, "one of %s", d->allowed); break;
    case T_FLOATS: {
        Allowed a = parse_allowed(d);
        if (a.min_len == a.max_len)
            snprintf(buf, n, "a list of %d numbers, each in %s", a.min_len, strstr(d->allowed, " of ") + 4);
        else
            snprintf(buf, n, "a list of %d to %d numbers, each in %s", a.min_len, a.max_len,
                     strstr(d->allowed, " of ") + 4);
        break;
    }
    default: snprintf(buf, n, "%s", type_name(d->type));
    }
}

static void set_origin(Config *cfg, int k, const Ctx *c) {
    char *o = cfg->origin[k];
    const char *w = c->where;
    size_t wl = strlen(w), room = CONFIG_ORIGIN_MAX - 12;  // room for ":line"
    if (wl > room) w += wl - room;                         // keep the file name, drop the front of the path
    if (c->line > 0)
        snprintf(o, CONFIG_ORIGIN_MAX, "%s:%d", w, c->line);
    else
        snprintf(o, CONFIG_ORIGIN_MAX, "%s", w);
}

// ---- values ---------------------------------------------------------------------

// One scalar as it appeared: text, and whether it was a plain (unquoted) scalar.
typedef struct {
    const char *text;
    bool plain;
} Scalar;

static bool parse_int(const char *s, long long *out) {
    if (!*s) return false;
    char *e;
    errno = 0;
    long long v = strtoll(s, &e, 10);
    if (*e || errno) return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, double *out) {
    if (!*s) return false;
    char *e;
    errno = 0;
    double v = strtod(s, &e);
    if (*e || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool parse_bool(const char *s, bool *out) {
    static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < ARRAY_LEN(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) return *out = true, true;
        if (strcasecmp(s, no[i]) == 0) return *out = false, true;
    }
    return false;
}

static bool enum_has(const char *choices, const char *s) {
    size_t n = strlen(s);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, s, n) == 0) return true;
        if (!bar) break;
        p = bar + 1;
    }
    return false;
}

// A numeric scalar must be plain: a quoted "0.1" is a string in YAML.
static int check_plain(const KeyDef *d, const Scalar *s, const Ctx *c) {
    if (s->plain) return 0;
    char exp[160];
    describe_expected(d, exp, sizeof exp);
    return fail(c, "key '%s': expected %s, got the quoted string \"%s\"; write it without quotes", d->name, exp,
                s->text);
}

// Set key k from n scalars (n > 1 or is_list only for FLOATS). Nothing is
// stored unless the whole value is valid.
static int assign(Config *cfg, int k, const Scalar *items, int n, bool is_list, const Ctx *c) {
    const KeyDef *d = KEYS[k];
    char exp[160];
    describe_expected(d, exp, sizeof exp);
    if (d->type != T_FLOATS && (is_list || n != 1))
        return fail(c, "key '%s': expected %s, got a list", d->name, exp);
    const Scalar *s = &items[0];
    if (d->type != T_STR && !is_list && s->plain && (!s->text[0] || !strcmp(s->text, "~") || !strcmp(s->text, "null")))  // NOLINT(clang-analyzer-core.uninitialized.Branch): not a list means a YAML scalar, so n == 1 and items[0] is set
        return fail(c, "key '%s': expected %s, got no value", d->name, exp);
    switch (d->type) {
    case T_INT: {
        long long v;
        if (check_plain(d, s, c)) return -1;
        if (!parse_int(s->text, &v)) return fail(c, "key '%s': expected %s, got '%s'", d->name, exp, s->text);
        Allowed a = parse_allowed(d);
        if (v > INT_MAX || v < INT_MIN)
            return fail(c, "key '%s': %s does not fit in an int (at most %d)", d->name, s->text, INT_MAX);
        if (!in_range(&a, (double)v)) return fail(c, "key '%s': %s is out of range %s", d->name, s->text, d->allowed);
        *(int *)field(cfg, k) = (int)v;
        break;
    }
    case T_FLOAT: {
        double v;
        if (check_plain(d, s, c)) return -1;
        if (!parse_float(s->text, &v)) return fail(c, "key '%s': expected %s, got '%s'", d->name, exp, s->text);
        Allowed a = parse_allowed(d);
        if (!in_range(&a, v)) return fail(c, "key '%s': %s is out of range %s", d->name, s->text, d->allowed);
        *(double *)field(cfg, k) = v;
        break;
    }
    case T_BOOL: {
        bool v;
        if (check_plain(d, s, c)) return -1;
        if (!parse_bool(s->text, &v)) return fail(c, "key '%s': expected true or false, got '%s'", d->name, s->text);
        *(bool *)field(cfg, k) = v;
        break;
    }
    case T_STR: {
        const char *t = s->text;
        if (s->plain && (strcmp(t, "~") == 0 || strcmp(t, "null") == 0)) t = "";
        if (strlen(t) >= d->size)
            return fail(c, "key '%s': the value is %zu characters long; at most %zu fit", d->name, strlen(t),
                        d->size - 1);
        strcpy((char *)field(cfg, k), t);
        break;
    }
    case T_ENUM:
        if (!enum_has(d->allowed, s->text))
            return fail(c, "key '%s': '%s' is not one of %s", d->name, s->text, d->allowed);
        strcpy((char *)field(cfg, k), s->text);
        break;
    case T_FLOATS: {
        Allowed a = parse_allowed(d);
        if (n < a.min_len || n > a.max_len) return fail(c, "key '%s': expected %s, got %d value%s", d->name, exp, n, n == 1 ? "" : "s");
        ConfigFloats v = {.n = n};
        for (int i = 0; i < n; i++) {
            if (check_plain(d, &items[i], c)) return -1;
            if (!parse_float(items[i].text, &v.v[i]))
                return fail(c, "key '%s': expected %s, got '%s' as item %d", d->name, exp, items[i].text, i + 1);
            if (!in_range(&a, v.v[i]))
                return fail(c, "key '%s': item %d (%s) is out of range %s", d->name, i + 1, items[i].text,
                            strstr(d->allowed, " of ") + 4);
        }
        *(ConfigFloats *)field(cfg, k) = v;
        break;
    }
    default: break;
    }
    set_origin(cfg, k, c);
    return 0;
}

void config_defaults(Config *cfg) {
    schema_init();
    memset(cfg, 0, sizeof *cfg);
    char err[512];
    for (int k = 0; k < CONFIG_NUM_KEYS; k++) {
        const KeyDef *d = KEYS[k];
        Ctx c = {"config schema default", 0, 0, err, sizeof err};
        Scalar items[CONFIG_LIST_MAX];
        int n = 1;
        bool is_list = false;
        char buf[256];
        if (d->type == T_FLOATS) {
            // "[a, b]": split here; the values go through assign like any list.
            snprintf(buf, sizeof buf, "%s", d->def);
            char *p = buf + (buf[0] == '[');
            char *end = strchr(p, ']');
            if (end) *end = 0;
            n = 0;
            char *save = NULL;
            for (char *tok = strtok_r(p, ", ", &save); tok && n < CONFIG_LIST_MAX; tok = strtok_r(NULL, ", ", &save))
                items[n++] = (Scalar){tok, true};
            is_list = true;
        } else {
            items[0] = (Scalar){d->def, true};
        }
        if (assign(cfg, k, items, n, is_list, &c)) fatal("%s", err);
        cfg->origin[k][0] = 0;
    }
}

// ---- YAML ------------------------------------------------------------------------

static const char *node_kind(const yaml_node_t *n) {
    return n->type == YAML_MAPPING_NODE ? "a mapping" : n->type == YAML_SEQUENCE_NODE ? "a list" : "a scalar";
}

static Scalar node_scalar(const yaml_node_t *n) {
    return (Scalar){(const char *)n->data.scalar.value, n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE};
}

static int parser_error(const yaml_parser_t *p, const char *name, char *err, size_t errlen) {
    Ctx c = {name, (int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1, err, errlen};
    const char *problem = p->problem ? p->problem : "unknown error";
    if (p->context)
        return fail(&c, "YAML syntax error: %s (%s at line %d)", problem, p->context, (int)p->context_mark.line + 1);
    return fail(&c, "YAML syntax error: %s", problem);
}

static int load_document(Config *cfg, yaml_document_t *doc, const char *name, char *err, size_t errlen) {
    yaml_node_t *root = yaml_document_get_root_node(doc);
    if (!root) return 0;  // empty file or comments only: nothing to set
    Ctx c = {name, (int)root->start_mark.line + 1, (int)root->start_mark.column + 1, err, errlen};
    if (root->type != YAML_MAPPING_NODE)
        return fail(&c, "expected a mapping of 'key: value' lines, got %s", node_kind(root));
    int seen[CONFIG_NUM_KEYS] = {0};  // line where each key was set in this document
    for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn = yaml_document_get_node(doc, pr->key), *vn = yaml_document_get_node(doc, pr->value);
        c.line = (int)kn->start_mark.line + 1;
        c.col = (int)kn->start_mark.column + 1;
        if (kn->type != YAML_SCALAR_NODE) return fail(&c, "a key must be a name, got %s", node_kind(kn));
        const char *key = (const char *)kn->data.scalar.value;
        int k = find_key(key);
        if (k < 0)
            return fail(&c, "unknown key '%s'; did you mean '%s'? (--help lists every key)", key, closest_key(key));
        if (seen[k]) return fail(&c, "key '%s' is given twice (first at line %d)", key, seen[k]);
        seen[k] = c.line;
        c.line = (int)vn->start_mark.line + 1;
        c.col = (int)vn->start_mark.column + 1;
        if (vn->type == YAML_MAPPING_NODE) {
            char exp[160];
            describe_expected(KEYS[k], exp, sizeof exp);
            return fail(&c, "key '%s': expected %s, got a mapping", key, exp);
        }
        Scalar items[CONFIG_LIST_MAX];
        int n = 0;
        if (vn->type == YAML_SCALAR_NODE) {
            items[n++] = node_scalar(vn);
        } else {
            int len = (int)(vn->data.sequence.items.top - vn->data.sequence.items.start);
            if (KEYS[k]->type == T_FLOATS && len > CONFIG_LIST_MAX) {
                char exp[160];
                describe_expected(KEYS[k], exp, sizeof exp);
                return fail(&c, "key '%s': expected %s, got %d values", key, exp, len);
            }
            for (int i = 0; i < len && i < CONFIG_LIST_MAX; i++) {
                yaml_node_t *e = yaml_document_get_node(doc, vn->data.sequence.items.start[i]);
                if (e->type != YAML_SCALAR_NODE) {
                    Ctx ce = {name, (int)e->start_mark.line + 1, (int)e->start_mark.column + 1, err, errlen};
                    return fail(&ce, "key '%s': list items must be numbers, got %s", key, node_kind(e));
                }
                items[n++] = node_scalar(e);
            }
        }
        if (assign(cfg, k, items, n, vn->type == YAML_SEQUENCE_NODE, &c)) return -1;
    }
    return 0;
}

// Parse one stream (already attached to parser p) into cfg.
static int load_stream(Config *cfg, yaml_parser_t *p, const char *name, char *err, size_t errlen) {
    yaml_document_t doc;
    if (!yaml_parser_load(p, &doc)) return parser_error(p, name, err, errlen);
    int rc = load_document(cfg, &doc, name, err, errlen);
    yaml_document_delete(&doc);
    if (rc) return rc;
    if (!yaml_parser_load(p, &doc)) return parser_error(p, name, err, errlen);
    yaml_node_t *extra = yaml_document_get_root_node(&doc);
    if (extra) {
        Ctx c = {name, (int)extra->start_mark.line + 1, (int)extra->start_mark.column + 1, err, errlen};
        rc = fail(&c, "a second YAML document; a config is a single mapping (remove the '---')");
    }
    yaml_document_delete(&doc);
    return rc;
}

int config_load_file(Config *cfg, const char *path, char *err, size_t errlen) {
    schema_init();
    FILE *f = fopen(path, "rb");
    if (!f) {
        Ctx c = {path, 0, 0, err, errlen};
        return fail(&c, "cannot open config file: %s", strerror(errno));
    }
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) fatal("libyaml: out of memory initialising the parser for %s", path);
    yaml_parser_set_input_file(&p, f);
    int rc = load_stream(cfg, &p, path, err, errlen);
    yaml_parser_delete(&p);
    fclose(f);
    return rc;
}

int config_load_string(Config *cfg, const char *yaml, const char *name, char *err, size_t errlen) {
    schema_init();
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) fatal("libyaml: out of memory initialising the parser for %s", name);
    yaml_parser_set_input_string(&p, (const unsigned char *)yaml, strlen(yaml));
    int rc = load_stream(cfg, &p, name, err, errlen);
    yaml_parser_delete(&p);
    return rc;
}

// ---- overrides ---------------------------------------------------------------------

int config_set(Config *cfg, const char *arg, char *err, size_t errlen) {
    schema_init();
    Ctx c = {arg, 0, 0, err, errlen};
    const char *s = arg[0] == '-' && arg[1] == '-' ? arg + 2 : arg;
    const char *eq = strchr(s, '=');
    char key[128];
    size_t kl = eq ? (size_t)(eq - s) : strlen(s);
    if (kl == 0 || kl >= sizeof key) return fail(&c, "expected --key=value");
    for (size_t i = 0; i < kl; i++) key[i] = s[i] == '-' ? '_' : s[i];
    key[kl] = 0;
    int k = find_key(key);
    if (k < 0) return fail(&c, "unknown key '%s'; did you mean '%s'? (--help lists every key)", key, closest_key(key));
    const KeyDef *d = KEYS[k];
    if (!eq) {
        if (d->type != T_BOOL) {
            char exp[160];
            describe_expected(d, exp, sizeof exp);
            return fail(&c, "key '%s' needs a value: --%s=VALUE, VALUE %s", key, key, exp);
        }
        Scalar t = {"true", true};
        return assign(cfg, k, &t, 1, false, &c);
    }
    const char *val = eq + 1;
    if (d->type != T_FLOATS) {
        Scalar t = {val, true};
        return assign(cfg, k, &t, 1, false, &c);
    }
    // A list: "a,b,c" or "[a, b, c]".
    char buf[512];
    snprintf(buf, sizeof buf, "%s", val);
    char *p = buf;
    while (isspace((unsigned char)*p)) p++;
    size_t L = strlen(p);
    while (L && isspace((unsigned char)p[L - 1])) p[--L] = 0;
    if (*p == '[' && L && p[L - 1] == ']') p[L - 1] = 0, p++;
    Scalar items[CONFIG_LIST_MAX + 1];
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(p, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*tok)) tok++;
        char *e = tok + strlen(tok);
        while (e > tok && isspace((unsigned char)e[-1])) *--e = 0;
        if (n == CONFIG_LIST_MAX + 1) {
            n++;
            break;
        }
        items[n++] = (Scalar){tok, true};
    }
    if (n > CONFIG_LIST_MAX) {
        char exp[160];
        describe_expected(d, exp, sizeof exp);
        return fail(&c, "key '%s': expected %s, got more than %d", key, exp, CONFIG_LIST_MAX);
    }
    return assign(cfg, k, items, n, true, &c);
}

// ---- rules that tie keys together -----------------------------------------------------

// " (configs/x.yaml:3)", " (--lr=1)" or " (default)": where a key got its value.
static const char *from(const Config *cfg, int k, char *buf, size_t n) {
    snprintf(buf, n, " (%s)", cfg->origin[k][0] ? cfg->origin[k] : "default");
    return buf;
}

typedef struct {
    const char *name;
    int embed_dim, depth, num_heads;
} Preset;

static const Preset PRESETS[] = {
    {"vit_tiny", 192, 12, 3},
    {"vit_small", 384, 12, 6},
    {"vit_base", 768, 12, 12},
};

int config_finalize(Config *cfg, char *err, size_t errlen) {
    schema_init();
    Ctx c = {"invalid config", 0, 0, err, errlen};
    char a[CONFIG_ORIGIN_MAX + 16], b[CONFIG_ORIGIN_MAX + 16];

    for (size_t i = 0; i < ARRAY_LEN(PRESETS); i++) {
        const Preset *p = &PRESETS[i];
        if (strcmp(cfg->model, p->name) != 0) continue;
        const struct { int k, want; } sizes[] = {
            {CFG_embed_dim, p->embed_dim}, {CFG_depth, p->depth}, {CFG_num_heads, p->num_heads}};
        for (size_t j = 0; j < ARRAY_LEN(sizes); j++) {
            int k = sizes[j].k, *v = (int *)field(cfg, k);
            if (*v == sizes[j].want) continue;
            if (cfg->origin[k][0])
                return fail(&c, "model %s%s fixes %s = %d, but %s = %d%s; drop %s or set model: custom", p->name,
                            from(cfg, CFG_model, a, sizeof a), KEYS[k]->name, sizes[j].want, KEYS[k]->name, *v,
                            from(cfg, k, b, sizeof b), KEYS[k]->name);
            *v = sizes[j].want;
            snprintf(cfg->origin[k], CONFIG_ORIGIN_MAX, "model %s", p->name);
        }
    }
    if (cfg->img_size % cfg->patch_size)
        return fail(&c, "img_size %d%s is not a multiple of patch_size %d%s", cfg->img_size,
                    from(cfg, CFG_img_size, a, sizeof a), cfg->patch_size, from(cfg, CFG_patch_size, b, sizeof b));
    if (cfg->embed_dim % cfg->num_heads)
        return fail(&c, "embed_dim %d%s is not a multiple of num_heads %d%s", cfg->embed_dim,
                    from(cfg, CFG_embed_dim, a, sizeof a), cfg->num_heads, from(cfg, CFG_num_heads, b, sizeof b));
    if (cfg->in_chans == 2)
        return fail(&c, "in_chans%s is 2; images are read as 1 (grey) or 3 (RGB) channels",
                    from(cfg, CFG_in_chans, a, sizeof a));
    if (cfg->mean.n != cfg->in_chans)
        return fail(&c, "mean%s has %d values but in_chans is %d%s; give one per channel", from(cfg, CFG_mean, a, sizeof a),
                    cfg->mean.n, cfg->in_chans, from(cfg, CFG_in_chans, b, sizeof b));
    if (cfg->std.n != cfg->in_chans)
        return fail(&c, "std%s has %d values but in_chans is %d%s; give one per channel", from(cfg, CFG_std, a, sizeof a),
                    cfg->std.n, cfg->in_chans, from(cfg, CFG_in_chans, b, sizeof b));
    if (cfg->scale.v[0] > cfg->scale.v[1])
        return fail(&c, "scale%s must be [low, high] with low <= high", from(cfg, CFG_scale, a, sizeof a));
    if (cfg->ratio.v[0] > cfg->ratio.v[1])
        return fail(&c, "ratio%s must be [low, high] with low <= high", from(cfg, CFG_ratio, a, sizeof a));
    if (cfg->min_lr > cfg->lr)
        return fail(&c, "min_lr %g%s is above lr %g%s", cfg->min_lr, from(cfg, CFG_min_lr, a, sizeof a), cfg->lr,
                    from(cfg, CFG_lr, b, sizeof b));
    if (cfg->warmup_steps > 0 && cfg->warmup_epochs > 0)
        return fail(&c, "warmup_steps%s and warmup_epochs%s are both set; give one", from(cfg, CFG_warmup_steps, a, sizeof a),
                    from(cfg, CFG_warmup_epochs, b, sizeof b));
    if (cfg->steps == 0 && cfg->epochs == 0 && cfg->time_limit_minutes == 0)
        return fail(&c, "steps, epochs and time_limit_minutes are all 0: nothing would end the run");
    if (cfg->mask_ratio + cfg->replace_ratio > 1)
        return fail(&c, "mask_ratio %g%s + replace_ratio %g%s exceed 1", cfg->mask_ratio,
                    from(cfg, CFG_mask_ratio, a, sizeof a), cfg->replace_ratio, from(cfg, CFG_replace_ratio, b, sizeof b));
    if (strcmp(cfg->task, "pretrain") == 0 && cfg->w_token == 0 && cfg->w_pixel == 0 && cfg->w_contrast == 0)
        return fail(&c, "w_token, w_pixel and w_contrast are all 0: no loss to pretrain with");
    if (cfg->keep_every > 0 && cfg->save_every > 0 && cfg->keep_every % cfg->save_every)
        return fail(&c, "keep_every %d%s is not a multiple of save_every %d%s, so no checkpoint would be kept",
                    cfg->keep_every, from(cfg, CFG_keep_every, a, sizeof a), cfg->save_every,
                    from(cfg, CFG_save_every, b, sizeof b));
    return 0;
}

int config_check_training(const Config *cfg, char *err, size_t errlen) {
    Ctx c = {"invalid config", 0, 0, err, errlen};
    char a[CONFIG_ORIGIN_MAX + 16], b[CONFIG_ORIGIN_MAX + 16];
    if (cfg->steps == 0 && cfg->epochs == 0 && strcmp(cfg->sched, "constant"))
        return fail(&c, "sched %s%s needs the run's length to decay over, but steps and epochs are 0: set one of them "
                    "(time_limit_minutes then caps it), or --sched=constant", cfg->sched, from(cfg, CFG_sched, a, sizeof a));
    if (strcmp(cfg->task, "pretrain")) return 0;  // the rules below are the pretraining heads'
    if (cfg->w_pixel > 0 && cfg->depth < 3)
        return fail(&c, "the pixel head reads block depth-3, so depth%s must be >= 3 (got %d), or w_pixel%s 0",
                    from(cfg, CFG_depth, a, sizeof a), cfg->depth, from(cfg, CFG_w_pixel, b, sizeof b));
    int grid = cfg->patch_size > 0 ? cfg->img_size / cfg->patch_size : 0, patches = grid * grid;
    if ((cfg->w_token > 0 || cfg->w_pixel > 0) &&
        lround(cfg->mask_ratio * patches) + lround(cfg->replace_ratio * patches) == 0)
        return fail(&c, "mask_ratio %g%s and replace_ratio %g%s select none of the %d patches, so the token and pixel "
                    "losses would be empty: raise one, or set w_token and w_pixel to 0", cfg->mask_ratio,
                    from(cfg, CFG_mask_ratio, a, sizeof a), cfg->replace_ratio, from(cfg, CFG_replace_ratio, b, sizeof b),
                    patches);
    if (cfg->teacher_momentum > 0 && cfg->w_contrast == 0)
        return fail(&c, "teacher_momentum %g%s needs the contrastive term (w_contrast > 0)", cfg->teacher_momentum,
                    from(cfg, CFG_teacher_momentum, a, sizeof a));
    if (cfg->teacher_momentum > 0 && cfg->mask_both_views)
        return fail(&c, "mask_both_views%s masks the student's view2, which teacher_momentum > 0%s does not have "
                    "(the teacher sees view2 whole); set one of them", from(cfg, CFG_mask_both_views, a, sizeof a),
                    from(cfg, CFG_teacher_momentum, b, sizeof b));
    if (cfg->local_crops > 0 && cfg->w_contrast == 0)
        return fail(&c, "local_crops %d%s are contrastive anchors and need the contrastive term (w_contrast > 0)",
                    (int)cfg->local_crops, from(cfg, CFG_local_crops, a, sizeof a));
    if (cfg->local_crops > 0 && (cfg->local_crop_size % cfg->patch_size || cfg->local_crop_size >= cfg->img_size))
        return fail(&c, "local_crop_size %d%s must be a multiple of patch_size %d below img_size %d",
                    (int)cfg->local_crop_size, from(cfg, CFG_local_crop_size, a, sizeof a), (int)cfg->patch_size,
                    (int)cfg->img_size);
    return 0;
}

// Keys whose help starts with "finetune:" do nothing in pretraining; a user who set one
// (in a file or on the command line) likely meant to fine-tune, so say so, naming where.
// A key set to its default is left out: an effective config (a run folder's config.yaml)
// lists every key, and its defaults change nothing.
int config_ignored_keys(const Config *cfg, char *buf, size_t n) {
    schema_init();
    int count = 0;
    size_t used = 0;
    if (n) buf[0] = 0;
    if (strcmp(cfg->task, "pretrain")) return 0;
    Config *defaults = xmalloc(sizeof *defaults, "the default config");
    config_defaults(defaults);
    for (int k = 0; k < CONFIG_NUM_KEYS; k++) {
        if (!cfg->origin[k][0] || strncmp(KEYS[k]->help, "finetune:", 9) || same_value(cfg, defaults, k)) continue;
        int w = snprintf(buf + used, used < n ? n - used : 0, "%s%s (%s)",
                         count ? ", " : "task pretrain ignores the fine-tuning keys set: ", KEYS[k]->name,
                         cfg->origin[k]);
        if (w > 0) used += (size_t)w;
        count++;
    }
    xfree(defaults);
    return count;
}

// ---- the command line ------------------------------------------------------------------

void config_from_args(Config *cfg, int argc, char **argv) {
    char err[1024];
    config_defaults(cfg);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s --config FILE.yaml [--key=value ...]\n"
                   "Every key below can be set in the YAML file (key: value) or on the command line\n"
                   "(--key=value, applied after the files). Lists: --mean=0.5,0.5,0.5.\n\n",
                   argv[0]);
            config_print_help(stdout);
            exit(0);
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *path = NULL;
        if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) {
            if (i + 1 >= argc) fatal("%s needs a file: %s FILE.yaml", argv[i], argv[i]);
            path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            path = argv[i] + 9;
        }
        if (path && config_load_file(cfg, path, err, sizeof err)) fatal("%s", err);
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) {
            i++;
            continue;
        }
        if (strncmp(argv[i], "--config=", 9) == 0) continue;
        if (strncmp(argv[i], "--", 2) != 0)
            fatal("unexpected argument '%s'; options are --config FILE and --key=value (see --help)", argv[i]);
        if (config_set(cfg, argv[i], err, sizeof err)) fatal("%s", err);
    }
    if (config_finalize(cfg, err, sizeof err)) fatal("%s", err);
}

// ---- writing it back ---------------------------------------------------------------------

void format_double(char *buf, size_t n, double v) {
    if (!isfinite(v)) {
        snprintf(buf, n, "%g", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

// A key's value as YAML text; strings double-quoted with escapes.
static void write_value(FILE *f, const Config *cfg, int k) {
    const KeyDef *d = KEYS[k];
    const void *p = cfield(cfg, k);
    char num[40];
    switch (d->type) {
    case T_INT: fprintf(f, "%d", *(const int *)p); break;
    case T_FLOAT:
        format_double(num, sizeof num, *(const double *)p);
        fputs(num, f);
        break;
    case T_BOOL: fputs(*(const bool *)p ? "true" : "false", f); break;
    case T_ENUM: fputs((const char *)p, f); break;
    case T_STR:
        fputc('"', f);
        for (const unsigned char *s = p; *s; s++) {
            if (*s == '"' || *s == '\\')
                fprintf(f, "\\%c", *s);
            else if (*s < 0x20 || *s == 0x7f)
                fprintf(f, "\\x%02x", *s);
            else
                fputc(*s, f);
        }
        fputc('"', f);
        break;
    case T_FLOATS: {
        const ConfigFloats *l = p;
        fputc('[', f);
        for (int i = 0; i < l->n; i++) {
            format_double(num, sizeof num, l->v[i]);
            fprintf(f, "%s%s", i ? ", " : "", num);
        }
        fputc(']', f);
        break;
    }
    default: break;
    }
}

char *config_to_yaml(const Config *cfg) {
    schema_init();
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) fatal("out of memory writing the config as YAML");
    fputs("# effective config: every key, as the trainer used it\n", f);
    for (int k = 0; k < CONFIG_NUM_KEYS; k++) {
        if (k == 0 || GROUP[k] != GROUP[k - 1]) fprintf(f, "%s# ---- %s\n", k ? "\n" : "", GROUP[k]);
        fprintf(f, "%s: ", KEYS[k]->name);
        write_value(f, cfg, k);
        fputc('\n', f);
    }
    if (fclose(f) != 0) fatal("out of memory writing the config as YAML");  // a memstream's text is complete only then
    return buf;
}

void config_print_help(FILE *f) {
    schema_init();
    static const char *tname[] = {"int", "float", "bool", "string", "enum", "floats"};
    for (int k = 0; k < CONFIG_NUM_KEYS; k++) {
        const KeyDef *d = KEYS[k];
        if (k == 0 || GROUP[k] != GROUP[k - 1]) fprintf(f, "%s%s:\n", k ? "\n" : "", GROUP[k]);
        char line[512];
        int n = snprintf(line, sizeof line, "  %-26s %-6s  default %-14s %s", d->name, tname[d->type],
                         d->def[0] ? d->def : "\"\"", d->allowed);
        while (n > 0 && line[n - 1] == ' ') line[--n] = 0;
        fprintf(f, "%s\n", line);
        fprintf(f, "  %-26s %s\n", "", d->help);
    }
}

static bool listed(const char *name, const char *const *list) {
    for (; list && *list; list++)
        if (!strcmp(name, *list)) return true;
    return false;
}

static int diff_keys(const Config *a, const Config *b, const char *const *list, bool only, char *buf, size_t buflen);

int config_diff(const Config *a, const Config *b, char *buf, size_t buflen) {
    return diff_keys(a, b, NULL, false, buf, buflen);
}

int config_diff_except(const Config *a, const Config *b, const char *const *ignore, char *buf, size_t buflen) {
    return diff_keys(a, b, ignore, false, buf, buflen);
}

int config_diff_only(const Config *a, const Config *b, const char *const *only, char *buf, size_t buflen) {
    return diff_keys(a, b, only, true, buf, buflen);
}

// The keys compared: those in `list` (only), or those not in it.
static int diff_keys(const Config *a, const Config *b, const char *const *list, bool only, char *buf, size_t buflen) {
    schema_init();
    int ndiff = 0;
    size_t used = 0;
    if (buf && buflen) buf[0] = 0;
    for (int k = 0; k < CONFIG_NUM_KEYS; k++) {
        const KeyDef *d = KEYS[k];
        if (listed(d->name, list) != only) continue;
        if (same_value(a, b, k)) continue;
        ndiff++;
        if (!buf || used + 1 >= buflen) continue;
        char *va = NULL, *vb = NULL;
        size_t la = 0, lb = 0;
        FILE *fa = open_memstream(&va, &la), *fb = open_memstream(&vb, &lb);
        if (!fa || !fb) fatal("out of memory describing a config difference");
        write_value(fa, a, k);
        write_value(fb, b, k);
        if (fclose(fa) != 0 || fclose(fb) != 0) fatal("out of memory describing a config difference");
        int n = snprintf(buf + used, buflen - used, "%s%s: %s vs %s", used ? "; " : "", d->name, va, vb);
        used = n < 0 ? buflen : used + (size_t)n < buflen ? used + (size_t)n : buflen - 1;
        free(va);
        free(vb);
    }
    return ndiff;
}
