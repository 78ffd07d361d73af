/* Benchmark task files (JSONL, our schema and the published Hugging Face
 * layouts) -> lm-evaluation-harness 0.4 requests.  See mpiquant/tasks.h. */
#define _GNU_SOURCE
#include "mpiquant/tasks.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mpiquant/error.h"
#include "mpiquant/mem.h"

/* Record layouts, in the order they are recognised. */
typedef enum {
  LAY_SCHEMA_MC = 0, LAY_SCHEMA_PARTIAL, LAY_SCHEMA_CLOZE, LAY_HELLASWAG,
  LAY_ARC, LAY_PIQA, LAY_WINOGRANDE, LAY_LAMBADA, LAY_MMLU, LAY_COUNT
} layout;

static const struct {
  const char *name;
  qz_task_kind kind;
} lay_info[LAY_COUNT] = {
    [LAY_SCHEMA_MC] = {"schema", QZ_TASK_MULTIPLE_CHOICE},
    [LAY_SCHEMA_PARTIAL] = {"schema", QZ_TASK_PARTIAL},
    [LAY_SCHEMA_CLOZE] = {"schema", QZ_TASK_CLOZE},
    [LAY_HELLASWAG] = {"hellaswag-hf", QZ_TASK_MULTIPLE_CHOICE},
    [LAY_ARC] = {"arc-hf", QZ_TASK_MULTIPLE_CHOICE},
    [LAY_PIQA] = {"piqa-hf", QZ_TASK_MULTIPLE_CHOICE},
    [LAY_WINOGRANDE] = {"winogrande-hf", QZ_TASK_PARTIAL},
    [LAY_LAMBADA] = {"lambada-hf", QZ_TASK_CLOZE},
    [LAY_MMLU] = {"mmlu", QZ_TASK_MULTIPLE_CHOICE},
};

static const char *kind_name(qz_task_kind k) {
  return k == QZ_TASK_MULTIPLE_CHOICE ? "multiple choice"
         : k == QZ_TASK_PARTIAL       ? "partial scoring"
                                      : "cloze";
}

/* A record mapped to lm-eval's doc_to_text / doc_to_choice / target:
 * multiple choice: one context, answers = the choices;
 * partial: contexts, one answer (the continuation); cloze: one of each. */
typedef struct {
  char *id;
  int64_t line;
  layout lay;
  char *desc;    /* MMLU description ("The following are ...\n\n") or NULL */
  char *subject; /* MMLU subject or NULL */
  char **ctxs;
  int nctxs;
  char **answers;
  int nanswers;
  int gold; /* -1 for cloze */
} rec;

struct qz_task {
  char *name, *path;
  layout lay; /* of the first record */
  qz_task_kind kind;
  rec *recs;
  int64_t nrecs;
  qz_task_doc *docs;
  int64_t ndocs;
};

/* ---- small string helpers ----------------------------------------------- */

typedef struct {
  char *s;
  size_t n, cap;
} sbuf;

static int sb_add(sbuf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + n + 1) cap *= 2;
    char *p = realloc(b->s, cap);
    QZ_CHECK(p, QZ_ERR_MEM, "out of memory building a task prompt");
    b->s = p;
    b->cap = cap;
  }
  memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = 0;
  return QZ_OK;
}
static int sb_str(sbuf *b, const char *s) { return sb_add(b, s, strlen(s)); }

static int fmt_str(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fmt_str(char **out, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = vasprintf(out, fmt, ap);
  va_end(ap);
  if (rc < 0) *out = NULL;
  QZ_CHECK(rc >= 0, QZ_ERR_MEM, "out of memory");
  return QZ_OK;
}

static int dup_str(const char *s, size_t n, char **out) {
  *out = malloc(n + 1);
  QZ_CHECK(*out, QZ_ERR_MEM, "out of memory");
  memcpy(*out, s, n);
  (*out)[n] = 0;
  return QZ_OK;
}

/* Decode one UTF-8 code point at s (valid UTF-8: jansson checked it). */
static uint32_t utf8_at(const unsigned char *s, int *len) {
  if (s[0] < 0x80) { *len = 1; return s[0]; }
  if ((s[0] & 0xE0) == 0xC0) { *len = 2; return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F); }
  if ((s[0] & 0xF0) == 0xE0) {
    *len = 3;
    return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
  }
  *len = 4;
  return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
         ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

static int utf8_put(uint32_t c, char *o) {
  if (c < 0x80) { o[0] = (char)c; return 1; }
  if (c < 0x800) { o[0] = (char)(0xC0 | (c >> 6)); o[1] = (char)(0x80 | (c & 0x3F)); return 2; }
  if (c < 0x10000) {
    o[0] = (char)(0xE0 | (c >> 12)); o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[2] = (char)(0x80 | (c & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (c >> 18)); o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((c >> 6) & 0x3F)); o[3] = (char)(0x80 | (c & 0x3F));
  return 4;
}

int64_t qz_utf8_chars(const char *s) {
  int64_t n = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) n += (*p & 0xC0) != 0x80;
  return n;
}

/* Python's str.isspace() (what str.strip() / rstrip() remove). */
static int py_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 ||
         c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Length in bytes of s without its trailing whitespace (Python rstrip). */
static size_t rstrip_len(const char *s, size_t n) {
  while (n > 0) {
    size_t b = n - 1;
    while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80) b--;
    int l;
    if (!py_space(utf8_at((const unsigned char *)s + b, &l))) break;
    n = b;
  }
  return n;
}

static size_t lstrip_off(const char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    int l;
    if (!py_space(utf8_at((const unsigned char *)s + i, &l))) break;
    i += (size_t)l;
  }
  return i;
}

/* Simple case mappings of Python's str.lower()/upper() for Latin, Greek
 * and Cyrillic letters (what benchmark text contains); others unchanged. */
static uint32_t to_lower(uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if ((c >= 0xC0 && c <= 0xDE && c != 0xD7) || (c >= 0x391 && c <= 0x3AB && c != 0x3A2) ||
      (c >= 0x410 && c <= 0x42F))
    return c + 32;
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  if (((c >= 0x100 && c <= 0x12F) || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177)) &&
      c % 2 == 0)
    return c + 1;
  if (((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) && c % 2 == 1) return c + 1;
  if (c == 0x178) return 0xFF;
  return c;
}
static uint32_t to_upper(uint32_t c) {
  if (c >= 'a' && c <= 'z') return c - 32;
  if ((c >= 0xE0 && c <= 0xFE && c != 0xF7) || (c >= 0x3B1 && c <= 0x3CB && c != 0x3C2) ||
      (c >= 0x430 && c <= 0x44F))
    return c - 32;
  if (c >= 0x450 && c <= 0x45F) return c - 80;
  if (((c >= 0x100 && c <= 0x12F) || (c >= 0x132 && c <= 0x137) || (c >= 0x14A && c <= 0x177)) &&
      c % 2 == 1)
    return c - 1;
  if (((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E)) && c % 2 == 0) return c - 1;
  if (c == 0xFF) return 0x178;
  return c;
}

/* Python str.capitalize(): first character upper, the rest lower. */
static int py_capitalize(const char *s, sbuf *b) {
  const unsigned char *p = (const unsigned char *)s;
  int first = 1;
  while (*p) {
    int l;
    uint32_t c = utf8_at(p, &l);
    char o[4];
    QZ_CALL(sb_add(b, o, (size_t)utf8_put(first ? to_upper(c) : to_lower(c), o)));
    first = 0;
    p += l;
  }
  return QZ_OK;
}

/* Non-overlapping left-to-right replace (Python str.replace). */
static int py_replace(const char *s, const char *from, const char *to, char **out) {
  sbuf b = {0};
  size_t fl = strlen(from);
  const char *p = s, *q;
  while ((q = strstr(p, from))) {
    QZ_CALL(sb_add(&b, p, (size_t)(q - p)));
    QZ_CALL(sb_str(&b, to));
    p = q + fl;
  }
  QZ_CALL(sb_str(&b, p));
  *out = b.s ? b.s : strdup("");
  QZ_CHECK(*out, QZ_ERR_MEM, "out of memory");
  return QZ_OK;
}

/* lm-eval hellaswag preprocess: strip; " [title]" -> ". "; drop "[...]"
 * (non-greedy, not across a newline); "  " -> " ". */
static int hellaswag_preprocess(const char *text, char **out) {
  *out = NULL;
  size_t n = strlen(text), a = lstrip_off(text, n), e = rstrip_len(text, n);
  char *s = NULL, *t = NULL;
  int st = QZ_OK;
  QZ_CALL(dup_str(text + a, e > a ? e - a : 0, &s));
  QZ_CALL_DONE(py_replace(s, " [title]", ". ", &t));
  size_t w = 0;
  for (size_t i = 0; t[i];) {
    if (t[i] == '[') {
      size_t j = i + 1;
      while (t[j] && t[j] != ']' && t[j] != '\n') j++;
      if (t[j] == ']') {
        i = j + 1;
        continue;
      }
    }
    t[w++] = t[i++];
  }
  t[w] = 0;
  QZ_CALL_DONE(py_replace(t, "  ", " ", out));
done:
  free(s);
  free(t);
  return st;
}

/* ---- one record ----------------------------------------------------------- */

typedef struct {
  const char *path;
  int64_t line;
} where;

#define REC_CHECK(cond, ...)                                                   \
  do {                                                                         \
    if (!(cond)) {                                                             \
      char m_[512];                                                            \
      snprintf(m_, sizeof m_, __VA_ARGS__);                                    \
      return qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,         \
                          "%s:%lld: %s", w->path, (long long)w->line, m_);     \
    }                                                                          \
  } while (0)

static int get_str(const where *w, json_t *o, const char *key, const char **s) {
  json_t *v = json_object_get(o, key);
  REC_CHECK(v, "the record has no \"%s\"", key);
  REC_CHECK(json_is_string(v), "\"%s\" must be a string", key);
  *s = json_string_value(v);
  return QZ_OK;
}

static int get_str_array(const where *w, json_t *arr, const char *key, char ***out, int *n) {
  REC_CHECK(json_is_array(arr), "\"%s\" must be an array of strings", key);
  REC_CHECK(json_array_size(arr) > 0, "\"%s\" is empty", key);
  REC_CHECK(json_array_size(arr) < 1000, "\"%s\" has %zu entries (at most 999)", key,
            json_array_size(arr));
  int k = (int)json_array_size(arr);
  QZ_CALL(qz_calloc((size_t)k, sizeof **out, "task strings", out));
  *n = k;
  for (int i = 0; i < k; i++) {
    json_t *v = json_array_get(arr, (size_t)i);
    REC_CHECK(json_is_string(v), "\"%s\"[%d] must be a string", key, i);
    QZ_CALL(dup_str(json_string_value(v), json_string_length(v), &(*out)[i]));
  }
  return QZ_OK;
}

/* An integer label, also as a decimal string ("3"), into [0, n). */
static int get_gold(const where *w, json_t *o, const char *key, int base, int n, int *gold) {
  json_t *v = json_object_get(o, key);
  REC_CHECK(v, "the record has no \"%s\"", key);
  long long g;
  if (json_is_integer(v)) {
    g = json_integer_value(v);
  } else {
    REC_CHECK(json_is_string(v) && json_string_length(v) > 0,
              "\"%s\" must be an integer (or a decimal string)", key);
    char *end;
    g = strtoll(json_string_value(v), &end, 10);
    REC_CHECK(*end == 0, "\"%s\" is \"%s\", expected an integer", key, json_string_value(v));
  }
  g -= base;
  REC_CHECK(g >= 0 && g < n, "%s %lld is outside the %d %s", key, g + base, n,
            base ? "options (1-based)" : "choices");
  *gold = (int)g;
  return QZ_OK;
}

static int set1(char ***arr, int *n, const char *s, size_t len) {
  QZ_CALL(qz_calloc(1, sizeof **arr, "task strings", arr));
  *n = 1;
  return dup_str(s, len, &(*arr)[0]);
}

static layout detect(json_t *o) {
  if (json_object_get(o, "ctx_a")) return LAY_HELLASWAG;
  if (json_object_get(o, "question") && json_is_object(json_object_get(o, "choices")))
    return LAY_ARC;
  if (json_object_get(o, "question") && json_object_get(o, "answer")) return LAY_MMLU;
  if (json_object_get(o, "goal")) return LAY_PIQA;
  if (json_object_get(o, "sentence") && json_object_get(o, "option1")) return LAY_WINOGRANDE;
  if (json_object_get(o, "contexts")) return LAY_SCHEMA_PARTIAL;
  if (json_object_get(o, "context") && json_object_get(o, "choices")) return LAY_SCHEMA_MC;
  if (json_object_get(o, "context") && json_object_get(o, "continuation"))
    return LAY_SCHEMA_CLOZE;
  if (json_object_get(o, "text")) return LAY_LAMBADA;
  return LAY_COUNT;
}

static int parse_record(const where *w, json_t *o, rec *r) {
  const char *s = NULL, *s2 = NULL;
  sbuf b = {0};
  int st = QZ_OK;
  r->gold = -1;
  switch (r->lay) {
    case LAY_SCHEMA_MC:
      QZ_CALL(get_str(w, o, "context", &s));
      QZ_CALL(set1(&r->ctxs, &r->nctxs, s, strlen(s)));
      QZ_CALL(get_str_array(w, json_object_get(o, "choices"), "choices", &r->answers,
                            &r->nanswers));
      QZ_CALL(get_gold(w, o, "gold", 0, r->nanswers, &r->gold));
      break;
    case LAY_SCHEMA_PARTIAL:
      QZ_CALL(get_str_array(w, json_object_get(o, "contexts"), "contexts", &r->ctxs, &r->nctxs));
      QZ_CALL(get_str(w, o, "continuation", &s));
      QZ_CALL(set1(&r->answers, &r->nanswers, s, strlen(s)));
      QZ_CALL(get_gold(w, o, "gold", 0, r->nctxs, &r->gold));
      break;
    case LAY_SCHEMA_CLOZE:
      QZ_CALL(get_str(w, o, "context", &s));
      QZ_CALL(set1(&r->ctxs, &r->nctxs, s, strlen(s)));
      QZ_CALL(get_str(w, o, "continuation", &s));
      QZ_CALL(set1(&r->answers, &r->nanswers, s, strlen(s)));
      break;
    case LAY_HELLASWAG: { /* lm-eval hellaswag/utils.py process_docs */
      const char *a, *bb;
      QZ_CALL(get_str(w, o, "activity_label", &s));
      QZ_CALL(get_str(w, o, "ctx_a", &a));
      QZ_CALL(get_str(w, o, "ctx_b", &bb));
      QZ_CALL_DONE(sb_str(&b, s));
      QZ_CALL_DONE(sb_str(&b, ": "));
      QZ_CALL_DONE(sb_str(&b, a));
      QZ_CALL_DONE(sb_str(&b, " "));
      QZ_CALL_DONE(py_capitalize(bb, &b));
      QZ_CALL_DONE(qz_calloc(1, sizeof *r->ctxs, "task strings", &r->ctxs));
      r->nctxs = 1;
      QZ_CALL_DONE(hellaswag_preprocess(b.s, &r->ctxs[0]));
      QZ_CALL_DONE(get_str_array(w, json_object_get(o, "endings"), "endings", &r->answers,
                                 &r->nanswers));
      for (int i = 0; i < r->nanswers; i++) {
        char *p = NULL;
        QZ_CALL_DONE(hellaswag_preprocess(r->answers[i], &p));
        free(r->answers[i]);
        r->answers[i] = p;
      }
      QZ_CALL_DONE(get_gold(w, o, "label", 0, r->nanswers, &r->gold));
      break;
    }
    case LAY_ARC: { /* "Question: {{question}}\nAnswer:", gold = label index */
      json_t *ch = json_object_get(o, "choices");
      char **labels = NULL;
      int nl = 0;
      QZ_CALL(get_str(w, o, "question", &s));
      QZ_CALL(get_str(w, o, "answerKey", &s2));
      QZ_CALL(get_str_array(w, json_object_get(ch, "text"), "choices.text", &r->answers,
                            &r->nanswers));
      QZ_CALL(get_str_array(w, json_object_get(ch, "label"), "choices.label", &labels, &nl));
      for (int i = 0; i < nl; i++) {
        if (r->gold < 0 && strcmp(labels[i], s2) == 0) r->gold = i;
        free(labels[i]);
      }
      free(labels);
      REC_CHECK(nl == r->nanswers, "choices.label has %d entries, choices.text %d", nl,
                r->nanswers);
      REC_CHECK(r->gold >= 0, "answerKey \"%s\" is not one of choices.label", s2);
      QZ_CALL_DONE(sb_str(&b, "Question: "));
      QZ_CALL_DONE(sb_str(&b, s));
      QZ_CALL_DONE(sb_str(&b, "\nAnswer:"));
      QZ_CALL_DONE(set1(&r->ctxs, &r->nctxs, b.s, b.n));
      break;
    }
    case LAY_PIQA: {
      const char *s1;
      QZ_CALL(get_str(w, o, "goal", &s));
      QZ_CALL(get_str(w, o, "sol1", &s1));
      QZ_CALL(get_str(w, o, "sol2", &s2));
      QZ_CALL(qz_calloc(2, sizeof *r->answers, "task strings", &r->answers));
      r->nanswers = 2;
      QZ_CALL(dup_str(s1, strlen(s1), &r->answers[0]));
      QZ_CALL(dup_str(s2, strlen(s2), &r->answers[1]));
      QZ_CALL(get_gold(w, o, "label", 0, 2, &r->gold));
      QZ_CALL_DONE(sb_str(&b, "Question: "));
      QZ_CALL_DONE(sb_str(&b, s));
      QZ_CALL_DONE(sb_str(&b, "\nAnswer:"));
      QZ_CALL_DONE(set1(&r->ctxs, &r->nctxs, b.s, b.n));
      break;
    }
    case LAY_WINOGRANDE: { /* partial scoring at the blank "_" */
      const char *o1, *o2;
      QZ_CALL(get_str(w, o, "sentence", &s));
      QZ_CALL(get_str(w, o, "option1", &o1));
      QZ_CALL(get_str(w, o, "option2", &o2));
      const char *us = strchr(s, '_');
      REC_CHECK(us, "\"sentence\" has no blank \"_\"");
      size_t pre = (size_t)(us - s);
      QZ_CALL(qz_calloc(2, sizeof *r->ctxs, "task strings", &r->ctxs));
      r->nctxs = 2;
      for (int i = 0; i < 2; i++) {
        b.n = 0;
        QZ_CALL_DONE(sb_add(&b, s, pre));
        QZ_CALL_DONE(sb_str(&b, i ? o2 : o1));
        QZ_CALL_DONE(dup_str(b.s, b.n, &r->ctxs[i]));
      }
      const char *rest = us + 1;
      size_t n = strlen(rest), a = lstrip_off(rest, n), e = rstrip_len(rest, n);
      QZ_CALL_DONE(set1(&r->answers, &r->nanswers, rest + a, e > a ? e - a : 0));
      QZ_CALL_DONE(get_gold(w, o, "answer", 1, 2, &r->gold));
      break;
    }
    case LAY_LAMBADA: { /* text.split(' '): all but the last word | last word */
      QZ_CALL(get_str(w, o, "text", &s));
      const char *sp = strrchr(s, ' ');
      size_t pre = sp ? (size_t)(sp - s) : 0;
      QZ_CALL(set1(&r->ctxs, &r->nctxs, s, pre));
      const char *last = sp ? sp + 1 : s;
      QZ_CALL(set1(&r->answers, &r->nanswers, last, strlen(last)));
      break;
    }
    case LAY_MMLU: { /* lm-eval mmlu default template */
      json_t *ch = json_object_get(o, "choices");
      QZ_CALL(get_str(w, o, "question", &s));
      QZ_CALL(get_str(w, o, "subject", &s2));
      char **opts = NULL;
      int nopt = 0;
      QZ_CALL(get_str_array(w, ch, "choices", &opts, &nopt));
      int ok = nopt <= 26;
      size_t n = strlen(s), a = lstrip_off(s, n), e = rstrip_len(s, n);
      st = sb_add(&b, s + a, e > a ? e - a : 0);
      for (int i = 0; st == QZ_OK && i < nopt; i++) {
        char lab[5] = {'\n', (char)('A' + i), '.', ' ', 0};
        if (ok) st = sb_str(&b, lab);
        if (ok && st == QZ_OK) st = sb_str(&b, opts[i]);
      }
      for (int i = 0; i < nopt; i++) free(opts[i]);
      free(opts);
      QZ_CALL_DONE(st);
      REC_CHECK(ok, "\"choices\" has %d entries (at most 26 letters)", nopt);
      QZ_CALL_DONE(sb_str(&b, "\nAnswer:"));
      QZ_CALL_DONE(set1(&r->ctxs, &r->nctxs, b.s, b.n));
      QZ_CALL_DONE(qz_calloc((size_t)nopt, sizeof *r->answers, "task strings", &r->answers));
      r->nanswers = nopt;
      for (int i = 0; i < nopt; i++) {
        char l = (char)('A' + i);
        QZ_CALL_DONE(dup_str(&l, 1, &r->answers[i]));
      }
      json_t *ans = json_object_get(o, "answer");
      if (json_is_string(ans) && json_string_length(ans) == 1 &&
          json_string_value(ans)[0] >= 'A' && json_string_value(ans)[0] <= 'Z') {
        r->gold = json_string_value(ans)[0] - 'A';
        REC_CHECK(r->gold < nopt, "answer \"%s\" is outside the %d choices",
                  json_string_value(ans), nopt);
      } else {
        QZ_CALL_DONE(get_gold(w, o, "answer", 0, nopt, &r->gold));
      }
      QZ_CALL_DONE(dup_str(s2, strlen(s2), &r->subject));
      char *subj = NULL;
      QZ_CALL_DONE(py_replace(s2, "_", " ", &subj));
      b.n = 0;
      st = sb_str(&b, "The following are multiple choice questions (with answers) about ");
      if (st == QZ_OK) st = sb_str(&b, subj);
      if (st == QZ_OK) st = sb_str(&b, ".\n\n");
      free(subj);
      QZ_CALL_DONE(st);
      QZ_CALL_DONE(dup_str(b.s, b.n, &r->desc));
      break;
    }
    default:
      break;
  }
  if (r->lay == LAY_SCHEMA_MC || r->lay == LAY_HELLASWAG || r->lay == LAY_ARC ||
      r->lay == LAY_PIQA)
    for (int i = 0; i < r->nanswers; i++)
      REC_CHECK(r->answers[i][0], "choice %d is an empty string", i);
done:
  free(b.s);
  return st;
}

static void rec_free(rec *r) {
  for (int i = 0; i < r->nctxs; i++) free(r->ctxs[i]);
  for (int i = 0; i < r->nanswers; i++) free(r->answers[i]);
  free(r->ctxs);
  free(r->answers);
  free(r->id);
  free(r->desc);
  free(r->subject);
  memset(r, 0, sizeof *r);
}

/* Parse every record of a file; all must have one kind (and MMLU or not). */
static int parse_file(const char *path, const char *name, rec **out, int64_t *nout) {
  *out = NULL;
  *nout = 0;
  char *text = NULL;
  size_t len = 0;
  QZ_CALL(qz_read_file(path, &text, &len));
  int st = QZ_OK;
  rec *recs = NULL;
  int64_t n = 0, cap = 0;
  where wh = {path, 0}, *w = &wh;
  json_t *o = NULL;
  for (size_t pos = 0; pos < len;) {
    const char *line = text + pos;
    const char *nl = memchr(line, '\n', len - pos);
    size_t ll = nl ? (size_t)(nl - line) : len - pos;
    pos += ll + (nl ? 1 : 0);
    wh.line++;
    if (rstrip_len(line, ll) == 0) continue; /* blank line */
    json_error_t je;
    o = json_loadb(line, ll, 0, &je);
    if (!o) {
      st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                        "%s:%lld: not a JSON object: %s (column %d)", path,
                        (long long)wh.line, je.text, je.column);
      goto done;
    }
    if (!json_is_object(o)) {
      st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                        "%s:%lld: expected a JSON object per line", path, (long long)wh.line);
      goto done;
    }
    layout lay = detect(o);
    if (lay == LAY_COUNT) {
      char keys[256] = "";
      const char *k;
      json_t *v;
      json_object_foreach(o, k, v) {
        if (strlen(keys) + strlen(k) + 4 >= sizeof keys) break;
        strcat(keys, keys[0] ? ", " : "");
        strcat(keys, k);
      }
      st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                        "%s:%lld: unknown record layout (keys: %s); expected "
                        "{id, context, choices, gold}, {id, contexts, continuation, "
                        "gold}, {id, context, continuation} or a published "
                        "hellaswag/ARC/PIQA/WinoGrande/LAMBADA/MMLU layout",
                        path, (long long)wh.line, keys);
      goto done;
    }
    if (n > 0 && (lay_info[lay].kind != lay_info[recs[0].lay].kind ||
                  (lay == LAY_MMLU) != (recs[0].lay == LAY_MMLU))) {
      st = qz_error_set(QZ_ERR_FORMAT, __FILE__, __LINE__, __func__,
                        "%s:%lld: a %s record (%s layout), but line %lld is %s (%s): "
                        "a task file holds one kind", path, (long long)wh.line,
                        kind_name(lay_info[lay].kind), lay_info[lay].name,
                        (long long)recs[0].line, kind_name(lay_info[recs[0].lay].kind),
                        lay_info[recs[0].lay].name);
      goto done;
    }
    if (n == cap) {
      cap = cap ? 2 * cap : 1024;
      rec *r2 = realloc(recs, (size_t)cap * sizeof *recs);
      QZ_CHECK_DONE(r2, QZ_ERR_MEM, "%s: out of memory at line %lld", path, (long long)wh.line);
      recs = r2;
    }
    rec *r = &recs[n++];
    memset(r, 0, sizeof *r);
    r->line = wh.line;
    r->lay = lay;
    json_t *id = json_object_get(o, "id");
    if (json_is_string(id)) {
      QZ_CALL_DONE(dup_str(json_string_value(id), json_string_length(id), &r->id));
    } else if (json_is_integer(id)) {
      QZ_CALL_DONE(fmt_str(&r->id, "%lld", (long long)json_integer_value(id)));
    } else {
      QZ_CHECK_DONE(!id || json_is_null(id), QZ_ERR_FORMAT,
                    "%s:%lld: \"id\" must be a string or an integer", path, (long long)wh.line);
      QZ_CALL_DONE(fmt_str(&r->id, "%s-%lld", name, (long long)(n - 1)));
    }
    QZ_CALL_DONE(parse_record(w, o, r));
    json_decref(o);
    o = NULL;
  }
  QZ_CHECK_DONE(n > 0, QZ_ERR_FORMAT, "%s: no records (an empty task file)", path);
done:
  json_decref(o);
  free(text);
  if (st != QZ_OK) {
    for (int64_t i = 0; i < n; i++) rec_free(&recs[i]);
    free(recs);
    return st;
  }
  *out = recs;
  *nout = n;
  return QZ_OK;
}

/* ---- documents and requests ---------------------------------------------- */

/* A few-shot example: context + " " + gold answer (lm-eval's doc_to_text +
 * target_delimiter + the gold choice / target). */
static int example_text(const rec *e, sbuf *b) {
  qz_task_kind k = lay_info[e->lay].kind;
  QZ_CALL(sb_str(b, k == QZ_TASK_PARTIAL ? e->ctxs[e->gold] : e->ctxs[0]));
  QZ_CALL(sb_str(b, " "));
  QZ_CALL(sb_str(b, k == QZ_TASK_MULTIPLE_CHOICE ? e->answers[e->gold] : e->answers[0]));
  return QZ_OK;
}

static int concat2(const char *a, size_t na, const char *b, char **out) {
  size_t nb = strlen(b);
  *out = malloc(na + nb + 1);
  QZ_CHECK(*out, QZ_ERR_MEM, "out of memory building a task prompt");
  memcpy(*out, a, na);
  memcpy(*out + na, b, nb + 1);
  return QZ_OK;
}

/* Requests of record r; the examples come from pool (self = r's index in
 * pool, or -1 when the pool is another file). */
static int build_doc(const qz_task *t, const rec *r, const rec *pool, int64_t npool,
                     int64_t self, const char *pool_path, int K, qz_task_doc *d) {
  sbuf p = {0};
  int st = QZ_OK;
  if (r->desc) QZ_CALL_DONE(sb_str(&p, r->desc));
  int got = 0;
  for (int64_t i = 0; i < npool && got < K; i++) {
    if (i == self) continue;
    if (r->subject && (!pool[i].subject || strcmp(pool[i].subject, r->subject) != 0)) continue;
    QZ_CALL_DONE(example_text(&pool[i], &p));
    QZ_CALL_DONE(sb_str(&p, "\n\n"));
    got++;
  }
  QZ_CHECK_DONE(got == K, QZ_ERR_ARG,
                "%s:%lld: --num-fewshot %d, but %s has only %d other record%s%s%s to take "
                "examples from", t->path, (long long)r->line, K, pool_path, got,
                got == 1 ? "" : "s", r->subject ? " of subject " : "",
                r->subject ? r->subject : "");
  const char *pre = p.s ? p.s : "";
  d->id = r->id;
  d->line = r->line;
  d->gold = r->gold;
  d->nreq = t->kind == QZ_TASK_PARTIAL ? r->nctxs
            : t->kind == QZ_TASK_CLOZE ? 1 : r->nanswers;
  QZ_CALL_DONE(qz_calloc((size_t)d->nreq, sizeof *d->ctx, "task requests", &d->ctx));
  QZ_CALL_DONE(qz_calloc((size_t)d->nreq, sizeof *d->cont, "task requests", &d->cont));
  QZ_CALL_DONE(qz_calloc((size_t)d->nreq, sizeof *d->nchars, "task requests", &d->nchars));
  /* multiple choice shares one context string, partial one continuation */
  for (int i = 0; i < d->nreq; i++) {
    if (t->kind != QZ_TASK_MULTIPLE_CHOICE || i == 0)
      QZ_CALL_DONE(concat2(pre, p.n, r->ctxs[t->kind == QZ_TASK_PARTIAL ? i : 0], &d->ctx[i]));
    else
      d->ctx[i] = d->ctx[0];
    if (t->kind == QZ_TASK_MULTIPLE_CHOICE) {
      QZ_CALL_DONE(concat2(" ", 1, r->answers[i], &d->cont[i]));
      d->nchars[i] = qz_utf8_chars(r->answers[i]);
    } else if (i == 0) {
      QZ_CALL_DONE(concat2(" ", 1, r->answers[0], &d->cont[i]));
    } else {
      d->cont[i] = d->cont[0];
    }
  }
done:
  free(p.s);
  return st;
}

static void doc_free(qz_task_kind k, qz_task_doc *d) {
  for (int i = 0; i < d->nreq; i++) {
    if (d->ctx && (k != QZ_TASK_MULTIPLE_CHOICE || i == 0)) free(d->ctx[i]);
    if (d->cont && (k == QZ_TASK_MULTIPLE_CHOICE || i == 0)) free(d->cont[i]);
  }
  free(d->ctx);
  free(d->cont);
  free(d->nchars);
}

void qz_task_free(qz_task **pt) {
  if (!pt || !*pt) return;
  qz_task *t = *pt;
  for (int64_t i = 0; i < t->ndocs; i++) doc_free(t->kind, &t->docs[i]);
  for (int64_t i = 0; i < t->nrecs; i++) rec_free(&t->recs[i]);
  free(t->docs);
  free(t->recs);
  free(t->name);
  free(t->path);
  free(t);
  *pt = NULL;
}

int qz_task_load(const char *path, const char *name, const qz_task_opts *o,
                 qz_task **out) {
  *out = NULL;
  QZ_CHECK(o->limit >= 0 && o->num_fewshot >= 0, QZ_ERR_ARG,
           "task %s: negative --limit or --num-fewshot", path);
  qz_task *t = NULL;
  QZ_CALL(qz_calloc(1, sizeof *t, "task", &t));
  int st = QZ_OK;
  rec *fs = NULL;
  int64_t nfs = 0;
  if (name) {
    QZ_CALL_DONE(dup_str(name, strlen(name), &t->name));
  } else {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    if (n > 6 && strcmp(b + n - 6, ".jsonl") == 0) n -= 6;
    QZ_CALL_DONE(dup_str(b, n, &t->name));
  }
  QZ_CALL_DONE(dup_str(path, strlen(path), &t->path));
  QZ_CALL_DONE(parse_file(path, t->name, &t->recs, &t->nrecs));
  t->lay = t->recs[0].lay;
  t->kind = lay_info[t->lay].kind;
  if (o->num_fewshot > 0 && o->fewshot_from) {
    QZ_CALL_DONE(parse_file(o->fewshot_from, t->name, &fs, &nfs));
    QZ_CHECK_DONE(lay_info[fs[0].lay].kind == t->kind &&
                      (fs[0].lay == LAY_MMLU) == (t->lay == LAY_MMLU),
                  QZ_ERR_FORMAT, "few-shot file %s holds %s records (%s layout), task %s "
                  "holds %s records (%s)", o->fewshot_from, kind_name(lay_info[fs[0].lay].kind),
                  lay_info[fs[0].lay].name, path, kind_name(t->kind), lay_info[t->lay].name);
  }
  int64_t nd = o->limit > 0 && o->limit < t->nrecs ? o->limit : t->nrecs;
  QZ_CALL_DONE(qz_calloc((size_t)nd, sizeof *t->docs, "task documents", &t->docs));
  for (int64_t i = 0; i < nd; i++) {
    t->ndocs = i + 1; /* so that qz_task_free frees a partly built doc */
    if (fs)
      QZ_CALL_DONE(build_doc(t, &t->recs[i], fs, nfs, -1, o->fewshot_from, o->num_fewshot,
                             &t->docs[i]));
    else
      QZ_CALL_DONE(build_doc(t, &t->recs[i], t->recs, t->nrecs, i, path, o->num_fewshot,
                             &t->docs[i]));
  }
done:
  for (int64_t i = 0; i < nfs; i++) rec_free(&fs[i]);
  free(fs);
  if (st != QZ_OK) {
    qz_task_free(&t);
    return st;
  }
  *out = t;
  return QZ_OK;
}

const char *qz_task_name(const qz_task *t) { return t->name; }
const char *qz_task_path(const qz_task *t) { return t->path; }
qz_task_kind qz_task_kind_of(const qz_task *t) { return t->kind; }
const char *qz_task_layout(const qz_task *t) { return lay_info[t->lay].name; }
int qz_task_has_acc_norm(const qz_task *t) {
  return t->kind == QZ_TASK_MULTIPLE_CHOICE && t->lay != LAY_MMLU;
}
int64_t qz_task_ndocs(const qz_task *t) { return t->ndocs; }
int64_t qz_task_ndocs_file(const qz_task *t) { return t->nrecs; }
const qz_task_doc *qz_task_doc_at(const qz_task *t, int64_t i) {
  return i >= 0 && i < t->ndocs ? &t->docs[i] : NULL;
}

static int is_file(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

int qz_task_resolve(const char *name, const char *task_dir, char *path, size_t len) {
  QZ_CHECK(name && *name, QZ_ERR_USAGE, "empty task name");
  const char *env = getenv("MPIQUANT_TASK_DIR");
  const char *dirs[2] = {task_dir, env && *env ? env : NULL};
  for (int i = 0; i < 2; i++) {
    if (!dirs[i]) continue;
    snprintf(path, len, "%s/%s.jsonl", dirs[i], name);
    if (is_file(path)) return QZ_OK;
  }
  if (is_file(name)) {
    snprintf(path, len, "%s", name);
    return QZ_OK;
  }
  QZ_FAIL(QZ_ERR_ARG,
          "unknown task '%s': no %s.jsonl in %s%s%s%s%s, and no file of that name "
          "(give --task-dir DIR, set MPIQUANT_TASK_DIR, or a path to a .jsonl)",
          name, name, task_dir ? "--task-dir " : "", task_dir ? task_dir : "",
          task_dir && dirs[1] ? " or " : "", dirs[1] ? "$MPIQUANT_TASK_DIR " : "",
          dirs[1] ? dirs[1] : (task_dir ? "" : "(no --task-dir, MPIQUANT_TASK_DIR unset)"));
}

/* ---- lm-eval _encode_pair -------------------------------------------------- */

static int encode(const qz_tokenizer *tok, qz_bos_mode bos, int32_t bos_id, const char *s,
                  size_t n, int32_t **ids, int64_t *nids) {
  QZ_CHECK(bos != QZ_BOS_YES || bos_id >= 0, QZ_ERR_ARG,
           "--add-bos yes, but config.json has no bos_token_id");
  QZ_CALL(qz_tokenizer_encode(tok, s, n, bos == QZ_BOS_DEFAULT, ids, nids));
  if (bos == QZ_BOS_YES) {
    int32_t *v = realloc(*ids, (size_t)(*nids + 1) * sizeof *v);
    if (!v) {
      free(*ids);
      *ids = NULL;
      QZ_FAIL(QZ_ERR_MEM, "out of memory");
    }
    memmove(v + 1, v, (size_t)*nids * sizeof *v);
    v[0] = bos_id;
    *ids = v;
    (*nids)++;
  }
  return QZ_OK;
}

int qz_task_encode_pair(const qz_tokenizer *tok, qz_bos_mode bos, int32_t bos_id,
                        const char *ctx, const char *cont, int32_t **ctx_ids,
                        int64_t *nctx, int32_t **cont_ids, int64_t *ncont) {
  *ctx_ids = *cont_ids = NULL;
  *nctx = *ncont = 0;
  size_t cl = strlen(ctx), kl = rstrip_len(ctx, cl);
  int st = QZ_OK;
  char *whole = NULL;
  int32_t *w = NULL, *c = NULL;
  int64_t nw = 0, nc = 0;
  QZ_CALL(concat2(ctx, cl, cont, &whole)); /* ctx[:kl] + (ctx[kl:] + cont) */
  if (kl == 0) { /* empty context: lm-eval's prefix token, then the rest */
    QZ_CHECK_DONE(bos_id >= 0, QZ_ERR_ARG, "a request with an empty context needs a BOS "
                  "token as its context, but config.json has no bos_token_id");
    QZ_CALL_DONE(qz_alloc(1, sizeof *c, "context ids", &c));
    c[0] = bos_id;
    nc = 1;
    QZ_CALL_DONE(qz_tokenizer_encode(tok, whole, strlen(whole), 0, &w, &nw));
    *cont_ids = w;
    *ncont = nw;
    w = NULL;
  } else {
    QZ_CALL_DONE(encode(tok, bos, bos_id, whole, strlen(whole), &w, &nw));
    QZ_CALL_DONE(encode(tok, bos, bos_id, ctx, kl, &c, &nc));
    int64_t n = nw > nc ? nw - nc : 0;
    QZ_CALL_DONE(qz_alloc((size_t)(n ? n : 1), sizeof **cont_ids, "continuation ids", cont_ids));
    memcpy(*cont_ids, w + nc, (size_t)n * sizeof **cont_ids);
    *ncont = n;
  }
  *ctx_ids = c;
  *nctx = nc;
  c = NULL;
  if (*ncont == 0) {
    qz_free(cont_ids);
    qz_free(ctx_ids);
    *nctx = 0;
    QZ_FAIL_DONE(QZ_ERR_FORMAT, "the continuation \"%.40s\" adds no tokens to its context "
                 "(lm-eval refuses such requests)", cont);
  }
done:
  free(whole);
  free(w);
  free(c);
  return st;
}
