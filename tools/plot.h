/* plot.h - `paraformer plot`: training logs (JSON lines) as one SVG.

   Part of tools/paraformer.c, which includes it once: every function is
   static, and it uses the program's die() and xmalloc() (an error exits
   naming the file, as everywhere in the program).

   Training logs (the events of docs/design.md §4.5) -> one self-contained
   SVG: loss and accuracy against the step with the stage starts marked, and
   accuracy against the number of branches from the last sweep. Each line is
   checked with the library's JSON reader (pf_json_check) and read with
   pf_json_number/numbers/string; unknown events and keys are ignored, so
   that logs of newer versions still draw. A resume event drops what the log
   holds beyond the step it resumes from (it is logged again). */
#ifndef PARAFORMER_PLOT_H
#define PARAFORMER_PLOT_H

#define PLOT_MAX_LINE (1 << 20)  // bytes in one log line
#define PLOT_MAX_LINES 10000000L // lines in one log
#define PLOT_MAX_POINTS 2000     // points per drawn series (beyond: bins averaged)
#define PLOT_MAX_RUNS 32         // --log files
#define PLOT_MAX_SWEEP 64        // branch prefixes in a sweep
#define PLOT_MAX_WARN 5          // invalid-line warnings per log (then a count)

typedef struct series {
    double *x, *y;
    size_t n, cap;
    size_t bin; // logged points averaged into each drawn one (1: none)
} series;

typedef struct stage_mark {
    double step;
    int stage, active; // active 0: not logged
} stage_mark;

typedef struct plot_run {
    const char *path;
    char label[128], schedule[32], data[128], split[32];
    double branches, depth, params, test_acc; // NAN when not logged
    series loss, acc, vloss, vacc;            // train loss, train acc (%), val loss, val acc (%)
    stage_mark *marks;
    int n_marks, cap_marks;
    double sweep[PLOT_MAX_SWEEP], sweep_step; // percent (NAN: not finite)
    int n_sweep;
    int starts; // "start" events: a log rerun with the same --log holds several runs
} plot_run;

static void *xrealloc_n(void *p, size_t *cap, size_t need, size_t elem) {
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    if (c > SIZE_MAX / elem) die(1, "out of memory");
    if (c != *cap) {
        p = realloc(p, c * elem);
        if (!p) die(1, "out of memory (%zu bytes)", c * elem);
        *cap = c;
    }
    return p;
}

static void series_add(series *s, double x, double y) {
    size_t cap;
    if (!(fabs(x) < 1e15 && fabs(y) < 1e12)) return; // NaN, inf, absurd
    if (s->n == s->cap) {
        cap = s->cap;
        s->x = (double *)xrealloc_n(s->x, &cap, s->n + 1, sizeof(double));
        cap = s->cap;
        s->y = (double *)xrealloc_n(s->y, &cap, s->n + 1, sizeof(double));
        s->cap = cap;
    }
    s->x[s->n] = x;
    s->y[s->n++] = y;
}

static void series_drop_after(series *s, double step) {
    size_t i, k = 0;
    for (i = 0; i < s->n; i++)
        if (s->x[i] <= step) s->x[k] = s->x[i], s->y[k++] = s->y[i];
    s->n = k;
}

static int cmp_xy(const void *a, const void *b) {
    const double *p = (const double *)a, *q = (const double *)b;
    return p[0] < q[0] ? -1 : p[0] > q[0] ? 1 : p[1] < q[1] ? -1 : p[1] > q[1];
}

// sorted by step, then consecutive bins averaged down to PLOT_MAX_POINTS
static void series_finish(series *s) {
    size_t i, k, b, n = 0;
    int sorted = 1;
    for (i = 1; i < s->n; i++)
        if (s->x[i] < s->x[i - 1]) sorted = 0;
    if (!sorted) {
        double *xy = (double *)xmalloc(2 * s->n * sizeof(double));
        for (i = 0; i < s->n; i++) xy[2 * i] = s->x[i], xy[2 * i + 1] = s->y[i];
        qsort(xy, s->n, 2 * sizeof(double), cmp_xy);
        for (i = 0; i < s->n; i++) s->x[i] = xy[2 * i], s->y[i] = xy[2 * i + 1];
        free(xy);
    }
    s->bin = (s->n + PLOT_MAX_POINTS - 1) / PLOT_MAX_POINTS;
    if (s->bin <= 1) {
        s->bin = 1;
        return;
    }
    for (i = 0; i < s->n; i += b) {
        double sx = 0.0, sy = 0.0;
        b = s->n - i < s->bin ? s->n - i : s->bin;
        for (k = i; k < i + b; k++) sx += s->x[k], sy += s->y[k];
        s->x[n] = sx / (double)b, s->y[n++] = sy / (double)b;
    }
    s->n = n;
}

static void series_free(series *s) {
    free(s->x);
    free(s->y);
}

// a finite number under `key`
static int log_num(const char *s, size_t n, const char *key, double *v) {
    return pf_json_number(s, n, key, v) && isfinite(*v);
}

// One event into r; 0 when the line is no log event (no "event" string).
static int plot_event(plot_run *r, const char *s, size_t n) {
    char ev[32], str[128];
    double step = NAN, v, vals[PLOT_MAX_SWEEP];
    int k, i, has_step;
    if (!pf_json_string(s, n, "event", ev, sizeof ev)) return 0;
    has_step = log_num(s, n, "step", &step);
    if (!strcmp(ev, "start")) {
        if (r->starts++) { // a later run appended to the same file: it replaces what came before
            r->loss.n = r->acc.n = r->vloss.n = r->vacc.n = 0;
            r->n_marks = r->n_sweep = 0;
            r->test_acc = NAN;
        }
        if (pf_json_string(s, n, "name", str, sizeof str) && *str) snprintf(r->label, sizeof r->label, "%s", str);
        pf_json_string(s, n, "schedule", r->schedule, sizeof r->schedule); // the line is valid: all or nothing
        pf_json_string(s, n, "data", r->data, sizeof r->data);
        if (log_num(s, n, "branches", &v)) r->branches = v;
        if (log_num(s, n, "depth", &v)) r->depth = v;
        if (log_num(s, n, "params", &v)) r->params = v;
    } else if (!strcmp(ev, "resume") && has_step) { // what follows replaces what was logged after `step`
        series_drop_after(&r->loss, step);
        series_drop_after(&r->acc, step);
        series_drop_after(&r->vloss, step);
        series_drop_after(&r->vacc, step);
        for (i = k = 0; i < r->n_marks; i++)
            if (r->marks[i].step <= step) r->marks[k++] = r->marks[i];
        r->n_marks = k;
        if (r->n_sweep && r->sweep_step > step) r->n_sweep = 0;
        r->test_acc = NAN;
    } else if (!strcmp(ev, "train") && has_step) {
        if (log_num(s, n, "loss", &v)) series_add(&r->loss, step, v);
        if (log_num(s, n, "acc", &v)) series_add(&r->acc, step, 100.0 * v);
    } else if (!strcmp(ev, "eval") && has_step) {
        if (pf_json_string(s, n, "split", str, sizeof str) && strcmp(str, "val")) return 1;
        if (log_num(s, n, "loss", &v)) series_add(&r->vloss, step, v);
        if (log_num(s, n, "accuracy", &v)) series_add(&r->vacc, step, 100.0 * v);
    } else if (!strcmp(ev, "stage") && has_step) {
        stage_mark m;
        m.step = step;
        m.stage = log_num(s, n, "stage", &v) && v >= 0 && v < 1e6 ? (int)v : 0;
        m.active = log_num(s, n, "active", &v) && v >= 1 && v < 1e6 ? (int)v : 0;
        for (i = 0; i < r->n_marks; i++) // logged again after a resume
            if (r->marks[i].step == m.step && r->marks[i].stage == m.stage) return 1;
        if (r->n_marks == r->cap_marks) {
            size_t cap = (size_t)r->cap_marks;
            r->marks = (stage_mark *)xrealloc_n(r->marks, &cap, (size_t)r->n_marks + 1, sizeof(stage_mark));
            if (cap > INT_MAX) die(1, "%s: too many stage events", r->path);
            r->cap_marks = (int)cap;
        }
        r->marks[r->n_marks++] = m;
    } else if (!strcmp(ev, "sweep")) {
        if (pf_json_numbers(s, n, "sweep", vals, PLOT_MAX_SWEEP, &k) && k > 0) {
            for (i = 0; i < k; i++) r->sweep[i] = isfinite(vals[i]) ? 100.0 * vals[i] : NAN;
            r->n_sweep = k;
            r->sweep_step = has_step ? step : NAN;
            if (!pf_json_string(s, n, "split", r->split, sizeof r->split)) r->split[0] = '\0';
        }
    } else if (!strcmp(ev, "end")) {
        if (log_num(s, n, "test_accuracy", &v)) r->test_acc = 100.0 * v;
    }
    return 1;
}

// reads one log into r; dies (naming the file) on what cannot be a log
static void plot_read(plot_run *r, const char *path) {
    // one line at a time, in static storage: a bad log ends the program
    // (die) with nothing allocated for it
    static char buf[PLOT_MAX_LINE + 1];
    FILE *f = fopen(path, "rb");
    const char *base = strrchr(path, '/');
    long lineno = 0, used = 0, bad = 0;
    size_t n;
    int ch, eof = 0;
    memset(r, 0, sizeof *r);
    r->path = path;
    r->branches = r->depth = r->params = r->test_acc = r->sweep_step = NAN;
    base = base ? base + 1 : path;
    snprintf(r->label, sizeof r->label, "%s", base);
    if (pf_path_has_ext(r->label, ".jsonl")) r->label[strlen(r->label) - 6] = '\0';
    if (!f) die(1, "%s: cannot open: %s", path, strerror(errno));
    while (!eof) {
        for (n = 0;;) { // one line, without its newline
            if ((ch = getc(f)) == EOF) {
                eof = 1;
                break;
            }
            if (ch == '\n') break;
            if (n == PLOT_MAX_LINE)
                die(1, "%s:%ld: line longer than %d bytes (is this a training log?)", path, lineno + 1, PLOT_MAX_LINE);
            buf[n++] = (char)ch;
        }
        if (eof && ferror(f)) die(1, "%s: read error: %s", path, strerror(errno));
        if (eof && n == 0) break;
        buf[n] = '\0';
        if (++lineno > PLOT_MAX_LINES) die(1, "%s: more than %ld lines", path, PLOT_MAX_LINES);
        if (strspn(buf, " \t\r") >= n) continue; // blank (strspn stops at a NUL)
        if (pf_json_check(buf, n, 1) != PF_OK) { // a line a crash cut short, or not a log at all
            if (++bad <= PLOT_MAX_WARN)
                fprintf(stderr, "warning: %s:%ld: skipped, not a JSON object (%s)\n", path, lineno, pf_last_error());
            continue;
        }
        used += plot_event(r, buf, n);
    }
    fclose(f);
    if (bad > PLOT_MAX_WARN)
        fprintf(stderr, "warning: %s: %ld more lines skipped, not JSON objects\n", path, bad - PLOT_MAX_WARN);
    if (lineno == 0) die(1, "%s: empty log", path);
    if (!used)
        die(1, "%s: no log events in its %ld line%s (expected one JSON object with an \"event\" per line)", path,
            lineno, lineno == 1 ? "" : "s");
    if (r->starts > 1)
        fprintf(stderr, "note: %s holds %d runs (the same --log used again): plotting the last\n", path, r->starts);
    series_finish(&r->loss);
    series_finish(&r->acc);
    series_finish(&r->vloss);
    series_finish(&r->vacc);
}

static void plot_run_free(plot_run *r) {
    series_free(&r->loss);
    series_free(&r->acc);
    series_free(&r->vloss);
    series_free(&r->vacc);
    free(r->marks);
}

// --- SVG helpers -------------------------------------------------------------

// UTF-8 length of the sequence at s (1..4), 0 when invalid (or not XML 1.0)
static int utf8_len(const unsigned char *s) {
    unsigned cp;
    int n, i;
    if (s[0] < 0x80) return 1;
    if ((s[0] & 0xE0) == 0xC0) n = 2, cp = s[0] & 0x1Fu;
    else if ((s[0] & 0xF0) == 0xE0) n = 3, cp = s[0] & 0x0Fu;
    else if ((s[0] & 0xF8) == 0xF0) n = 4, cp = s[0] & 0x07u;
    else return 0;
    for (i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3Fu);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp < 0xE000) || cp == 0xFFFE || cp == 0xFFFF)
        return 0;
    return n;
}

// characters (code points) in s, invalid bytes counted as one each
static size_t text_chars(const char *s) {
    size_t k = 0;
    int n;
    while (*s) {
        n = utf8_len((const unsigned char *)s);
        s += n ? n : 1, k++;
    }
    return k;
}

// s as XML text or attribute value, at most max characters (then "…");
// control characters become spaces, invalid UTF-8 '?'
static void svg_esc(FILE *f, const char *s, size_t max) {
    size_t k = 0;
    int n;
    for (; *s; k++) {
        unsigned char c = (unsigned char)*s;
        if (k == max) {
            fputs("\xE2\x80\xA6", f);
            return;
        }
        n = utf8_len((const unsigned char *)s);
        if (!n) fputc('?', f), n = 1;
        else if (n > 1) fwrite(s, 1, (size_t)n, f);
        else if (c == '&') fputs("&amp;", f);
        else if (c == '<') fputs("&lt;", f);
        else if (c == '>') fputs("&gt;", f);
        else if (c == '"') fputs("&quot;", f);
        else if (c == '\'') fputs("&#39;", f);
        else fputc(c < 0x20 ? ' ' : c, f);
        s += n;
    }
}

// rough width of text in a sans-serif font of size px
static double text_w(const char *s, double px) { return 0.58 * px * (double)text_chars(s); }

static void svg_text(FILE *f, double x, double y, double size, const char *anchor, const char *fill,
                     const char *extra, const char *s, size_t max) {
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"%g\"%s%s%s fill=\"%s\"%s%s>", x, y, size,
            anchor ? " text-anchor=\"" : "", anchor ? anchor : "", anchor ? "\"" : "", fill, extra ? " " : "",
            extra ? extra : "");
    svg_esc(f, s, max);
    fputs("</text>\n", f);
}

static const char *const PLOT_COLOURS[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                           "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
#define PLOT_N_COLOURS ((int)(sizeof PLOT_COLOURS / sizeof PLOT_COLOURS[0]))
static const char *run_colour(int r) { return PLOT_COLOURS[r % PLOT_N_COLOURS]; }

// --- axes --------------------------------------------------------------------

typedef struct axis {
    double lo, hi;    // drawn range
    double t0, step;  // ticks t0, t0+step, ... <= hi
    double scale;     // tick labels divided by this (1, 1e3 "k", 1e6 "M")
    const char *unit; // after each tick label ("%" or "")
} axis;

// ticks at 1, 2 or 5 x 10^k covering [lo, hi], about `target` of them
static axis nice_axis(double lo, double hi, int target) {
    axis a;
    double raw, mag, f, top;
    if (!(hi - lo > 1e-12 * (fabs(lo) + fabs(hi)))) {
        double pad = lo != 0.0 ? 0.1 * fabs(lo) : 1.0;
        lo -= pad, hi += pad;
    }
    raw = (hi - lo) / target;
    mag = pow(10.0, floor(log10(raw)));
    f = raw / mag;
    a.step = (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * mag;
    a.lo = a.t0 = floor(lo / a.step + 1e-9) * a.step;
    a.hi = ceil(hi / a.step - 1e-9) * a.step;
    top = fabs(a.lo) > fabs(a.hi) ? fabs(a.lo) : fabs(a.hi);
    a.scale = top >= 1e7 && a.step >= 1e5 ? 1e6 : top >= 1e4 && a.step >= 100 ? 1e3 : 1.0;
    a.unit = "";
    return a;
}

static const char *tick_label(const axis *a, double v, char *buf, size_t cap) {
    double st = a->step / a->scale;
    int dec = st >= 1.0 ? 0 : (int)ceil(-log10(st) - 1e-9);
    if (fabs(v) < 1e-9 * a->step) v = 0.0; // no "-0"
    if (v == 0.0 && a->scale != 1.0) dec = 0; // "0", not "0k" or "0.0k"
    if (a->scale == 1e6 && fabs(v) >= 1e10) { // beyond what a log holds: 1e+14
        snprintf(buf, cap, "%.3g%s", v, a->unit);
        return buf;
    }
    snprintf(buf, cap, "%.*f%s%s", dec, v / a->scale,
             v == 0.0 ? "" : a->scale == 1e6 ? "M" : a->scale == 1e3 ? "k" : "", a->unit);
    return buf;
}

typedef struct frame {
    double x, y, w, h; // plot area (pixels)
    axis ax, ay;
} frame;

static double fx(const frame *p, double v) { return p->x + (v - p->ax.lo) / (p->ax.hi - p->ax.lo) * p->w; }
static double fy(const frame *p, double v) { return p->y + p->h - (v - p->ay.lo) / (p->ay.hi - p->ay.lo) * p->h; }

// grid, ticks, tick labels, axis lines and labels; a clip path `clip` for the data
static void draw_frame(FILE *f, const frame *p, const char *xlabel, const char *ylabel, const char *clip) {
    char b[64];
    double v;
    int i;
    fprintf(f, "<clipPath id=\"%s\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/></clipPath>\n", clip,
            p->x - 4, p->y - 4, p->w + 8, p->h + 8);
    fprintf(f, "<g stroke=\"#e4e4e4\" stroke-width=\"1\">\n");
    for (i = 0; i < 1000 && (v = p->ay.t0 + i * p->ay.step) <= p->ay.hi + 1e-9 * p->ay.step; i++)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", p->x, fy(p, v), p->x + p->w, fy(p, v));
    for (i = 0; i < 1000 && (v = p->ax.t0 + i * p->ax.step) <= p->ax.hi + 1e-9 * p->ax.step; i++)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", fx(p, v), p->y, fx(p, v), p->y + p->h);
    fprintf(f, "</g>\n<g font-size=\"11\" fill=\"#555\">\n");
    for (i = 0; i < 1000 && (v = p->ay.t0 + i * p->ay.step) <= p->ay.hi + 1e-9 * p->ay.step; i++)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", p->x - 6, fy(p, v) + 4,
                tick_label(&p->ay, v, b, sizeof b));
    for (i = 0; i < 1000 && (v = p->ax.t0 + i * p->ax.step) <= p->ax.hi + 1e-9 * p->ax.step; i++)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", fx(p, v), p->y + p->h + 16,
                tick_label(&p->ax, v, b, sizeof b));
    fprintf(f, "</g>\n<path d=\"M%.1f %.1fV%.1fH%.1f\" fill=\"none\" stroke=\"#888\" stroke-width=\"1\"/>\n", p->x,
            p->y, p->y + p->h, p->x + p->w);
    svg_text(f, p->x + p->w / 2, p->y + p->h + 34, 12, "middle", "#333", NULL, xlabel, 200);
    fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" font-size=\"12\" text-anchor=\"middle\" "
               "fill=\"#333\">", p->x - 48, p->y + p->h / 2);
    svg_esc(f, ylabel, 200);
    fputs("</text>\n", f);
}

// a series as a line (dots: also a circle at each point; one point: a circle)
static void draw_series(FILE *f, const frame *p, const series *s, const char *colour, double width,
                        double opacity, int dots, const char *clip) {
    size_t i;
    if (!s->n) return;
    fprintf(f, "<g clip-path=\"url(#%s)\">\n", clip);
    if (s->n > 1) {
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"%g\" stroke-opacity=\"%g\" "
                   "stroke-linejoin=\"round\" d=\"", colour, width, opacity);
        for (i = 0; i < s->n; i++)
            fprintf(f, "%s%.1f %.1f%s", i ? "L" : "M", fx(p, s->x[i]), fy(p, s->y[i]), i % 12 == 11 ? "\n" : "");
        fputs("\"/>\n", f);
    }
    if (s->n == 1 || (dots && s->n <= 300))
        for (i = 0; i < s->n; i++)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%g\" fill=\"%s\"/>\n", fx(p, s->x[i]), fy(p, s->y[i]),
                    dots ? 3.0 : 2.5, colour);
    fputs("</g>\n", f);
}

typedef struct mark_label {
    double x, x0, w; // the line, the label's left edge and width (pixels)
    int row;         // of the strip above the plot
    const char *colour;
    char text[48];
} mark_label;

static int cmp_label(const void *a, const void *b) {
    double u = ((const mark_label *)a)->x, v = ((const mark_label *)b)->x;
    return u < v ? -1 : u > v;
}

#define PLOT_MARK_ROWS 4

// The stage-start labels of all runs for frame p (only x is used), placed in
// rows so that they do not overlap; *rows gets the rows used. Free the result.
static mark_label *layout_marks(const frame *p, const plot_run *runs, int nr, int *n_out, int *rows) {
    mark_label *lab;
    double row_end[PLOT_MARK_ROWS];
    int r, i, k, n = 0, total = 0;
    *rows = 0;
    for (r = 0; r < nr; r++) total += runs[r].n_marks;
    lab = (mark_label *)xmalloc((size_t)(total ? total : 1) * sizeof *lab);
    for (r = 0; r < nr; r++)
        for (i = 0; i < runs[r].n_marks; i++) {
            const stage_mark *m = &runs[r].marks[i];
            mark_label *l = &lab[n++];
            l->x = fx(p, m->step);
            l->colour = nr == 1 ? "#555" : run_colour(r);
            if (m->active) snprintf(l->text, sizeof l->text, "stage %d (%d branch%s)", m->stage, m->active,
                                    m->active == 1 ? "" : "es");
            else snprintf(l->text, sizeof l->text, "stage %d", m->stage);
        }
    qsort(lab, (size_t)n, sizeof *lab, cmp_label);
    for (k = 0; k < PLOT_MARK_ROWS; k++) row_end[k] = -1e30;
    for (i = 0; i < n; i++) {
        lab[i].w = text_w(lab[i].text, 11) + 4;
        lab[i].x0 = lab[i].x + 3;
        if (lab[i].x0 + lab[i].w > p->x + p->w) lab[i].x0 = lab[i].x - 3 - lab[i].w; // left of its line
        for (k = 0; k < PLOT_MARK_ROWS && row_end[k] >= lab[i].x0; k++) {}
        if (k == PLOT_MARK_ROWS) { // every row taken there: the one that frees first
            int j;
            for (k = 0, j = 1; j < PLOT_MARK_ROWS; j++)
                if (row_end[j] < row_end[k]) k = j;
        }
        lab[i].row = k;
        row_end[k] = lab[i].x0 + lab[i].w + 6;
        if (k + 1 > *rows) *rows = k + 1;
    }
    *n_out = n;
    return lab;
}

// dashed lines at the stage starts from the label strip (`rows` rows of 15
// pixels above the plot) down to the x axis, labelled in the strip
static void draw_marks(FILE *f, const frame *p, const plot_run *runs, int nr, int rows) {
    int n, used, i;
    mark_label *lab = layout_marks(p, runs, nr, &n, &used);
    double top = p->y - 15.0 * rows - 2;
    (void)used;
    if (n) fprintf(f, "<g stroke-width=\"1.2\" stroke-dasharray=\"5 4\">\n");
    for (i = 0; i < n; i++)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", lab[i].x,
                top + 15.0 * lab[i].row + 2, lab[i].x, p->y + p->h, lab[i].colour);
    if (n) fprintf(f, "</g>\n");
    for (i = 0; i < n; i++)
        svg_text(f, lab[i].x0 + 2, top + 15.0 * lab[i].row + 12, 11, NULL, lab[i].colour, NULL, lab[i].text, 48);
    free(lab);
}

typedef struct legend_item {
    const char *colour;
    int style; // 0 line, 1 line with a dot, 2 dot, 3 dashed line
    char text[80];
} legend_item;

// items right-aligned ending at x_right, baseline y
static void draw_legend(FILE *f, const legend_item *it, int n, double x_right, double y) {
    double x = x_right;
    int i;
    for (i = 0; i < n; i++) x -= 26 + text_w(it[i].text, 12) + 16;
    for (i = 0; i < n; i++) {
        if (it[i].style != 2)
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"%s\"%s/>\n",
                    x, y - 4, x + 20, y - 4, it[i].colour, it[i].style == 1 ? "2.2" : "1.6",
                    it[i].style == 3 ? " stroke-dasharray=\"5 4\"" : "");
        if (it[i].style == 1 || it[i].style == 2)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", x + 10, y - 4, it[i].colour);
        svg_text(f, x + 26, y, 12, NULL, "#333", NULL, it[i].text, 80);
        x += 26 + text_w(it[i].text, 12) + 16;
    }
}

// --- the panels ----------------------------------------------------------------

static void series_range(const series *s, double *lo, double *hi) {
    size_t i;
    for (i = 0; i < s->n; i++) {
        if (s->y[i] < *lo) *lo = s->y[i];
        if (s->y[i] > *hi) *hi = s->y[i];
    }
}

// panel 1 or 2: loss (acc 0) or accuracy (acc 1) against the step
// (y: top of the panel; rows: of stage labels between its title and the plot)
static void plot_step_panel(FILE *f, const plot_run *runs, int nr, int acc, double x, double y, double w, double h,
                            const axis *ax, int rows) {
    const char *clip = acc ? "clip_acc" : "clip_loss";
    double lo = INFINITY, hi = -INFINITY, pad;
    frame p;
    legend_item it[3];
    size_t bin = 1;
    int r, n_it = 0, have_val = 0, have_train = 0;
    for (r = 0; r < nr; r++) {
        const series *t = acc ? &runs[r].acc : &runs[r].loss, *v = acc ? &runs[r].vacc : &runs[r].vloss;
        series_range(t, &lo, &hi);
        series_range(v, &lo, &hi);
        have_train |= t->n > 0, have_val |= v->n > 0;
        if (t->bin > bin) bin = t->bin;
    }
    if (lo > hi) lo = 0.0, hi = acc ? 100.0 : 1.0;
    pad = 0.04 * (hi - lo);
    p.x = x, p.y = y + 30 + 15.0 * rows, p.w = w, p.h = h;
    p.ax = *ax;
    p.ay = nice_axis(lo - pad, hi + pad, 5);
    if (acc) p.ay.unit = "%";
    if (p.ay.lo < 0.0 && lo >= 0.0) p.ay.lo = p.ay.t0 = 0.0; // no axis below 0 (or above 100%) without data there
    if (acc && p.ay.hi > 100.0 && hi <= 100.0) p.ay.hi = 100.0;
    svg_text(f, x, y + 14, 15, NULL, "#222", "font-weight=\"bold\"", acc ? "Accuracy" : "Loss", 40);
    if (have_train) {
        it[n_it].colour = nr == 1 ? PLOT_COLOURS[0] : "#555";
        it[n_it].style = 0;
        if (bin > 1) snprintf(it[n_it].text, sizeof it[n_it].text, "train (means of %zu logged values)", bin);
        else snprintf(it[n_it].text, sizeof it[n_it].text, "train");
        n_it++;
    }
    if (have_val) {
        it[n_it].colour = nr == 1 ? PLOT_COLOURS[1] : "#555";
        it[n_it].style = 1;
        snprintf(it[n_it].text, sizeof it[n_it].text, "validation");
        n_it++;
    }
    draw_legend(f, it, n_it, x + w, y + 14);
    draw_frame(f, &p, "step (optimizer steps)", acc ? "accuracy (%)" : "cross-entropy loss", clip);
    draw_marks(f, &p, runs, nr, rows);
    for (r = 0; r < nr; r++) {
        const char *ct = nr == 1 ? PLOT_COLOURS[0] : run_colour(r), *cv = nr == 1 ? PLOT_COLOURS[1] : run_colour(r);
        draw_series(f, &p, acc ? &runs[r].acc : &runs[r].loss, ct, 1.4, nr == 1 ? 0.9 : 0.6, 0, clip);
        draw_series(f, &p, acc ? &runs[r].vacc : &runs[r].vloss, cv, 2.2, 1.0, 1, clip);
    }
    if (!have_train && !have_val)
        svg_text(f, p.x + p.w / 2, p.y + p.h / 2, 13, "middle", "#888", NULL,
                 acc ? "no accuracy logged yet" : "no loss logged yet", 60);
}

// panel 3: accuracy against the number of branches (each run's last sweep)
static void plot_sweep_panel(FILE *f, const plot_run *runs, int nr, double x, double y, double w, double h) {
    double lo = INFINITY, hi = -INFINITY, pad;
    char b[160], note[160];
    frame p;
    int r, i, nmax = 0, missing = 0;
    const char *split = NULL;
    for (r = 0; r < nr; r++) {
        if (!runs[r].n_sweep) {
            missing++;
            continue;
        }
        if (runs[r].n_sweep > nmax) nmax = runs[r].n_sweep;
        for (i = 0; i < runs[r].n_sweep; i++)
            if (isfinite(runs[r].sweep[i])) {
                if (runs[r].sweep[i] < lo) lo = runs[r].sweep[i];
                if (runs[r].sweep[i] > hi) hi = runs[r].sweep[i];
            }
        if (!split) split = runs[r].split;
        else if (strcmp(split, runs[r].split)) split = "";
    }
    if (split && *split) snprintf(b, sizeof b, "Accuracy vs branches used (last sweep, %s split)", split);
    else snprintf(b, sizeof b, "Accuracy vs branches used (last sweep)");
    svg_text(f, x, y + 14, 15, NULL, "#222", "font-weight=\"bold\"", b, 160);
    if (lo > hi) { // no sweep with a finite value
        svg_text(f, x, y + 36, 13, NULL, "#888", NULL,
                 "no sweep yet: the accuracy of each number of branches appears after a sweep event",
                 (size_t)(w / (0.58 * 13)));
        return;
    }
    pad = 0.15 * (hi - lo) > 0.5 ? 0.15 * (hi - lo) : 0.5;
    p.x = x, p.y = y + 30, p.w = w, p.h = h;
    p.ay = nice_axis(lo - pad, hi + 1.5 * pad, 5);
    p.ay.unit = "%";
    if (p.ay.lo < 0.0 && lo >= 0.0) p.ay.lo = p.ay.t0 = 0.0;
    if (p.ay.hi > 100.0 && hi <= 100.0) p.ay.hi = 100.0;
    p.ax.lo = 0.5, p.ax.hi = nmax + 0.5, p.ax.t0 = 1.0, p.ax.scale = 1.0, p.ax.unit = "";
    p.ax.step = nmax <= 20 ? 1.0 : nice_axis(1.0, nmax, 10).step;
    note[0] = '\0';
    if (p.ay.lo > 0.0) snprintf(note, sizeof note, "y axis starts at %s, not 0", tick_label(&p.ay, p.ay.lo, b, 64));
    if (missing) {
        size_t len = strlen(note);
        snprintf(note + len, sizeof note - len, "%s%d run%s without a sweep yet", len ? "; " : "", missing,
                 missing == 1 ? "" : "s");
    }
    if (*note) svg_text(f, x + w, y + 14, 12, "end", "#777", "font-style=\"italic\"", note, 160);
    draw_frame(f, &p, "branches used (the first k of the model's branches)", "accuracy (%)", "clip_sweep");
    for (r = 0; r < nr; r++) {
        const plot_run *u = &runs[r];
        const char *col = nr == 1 ? PLOT_COLOURS[0] : run_colour(r);
        int first = 1;
        if (!u->n_sweep) continue;
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"2\" d=\"", col);
        for (i = 0; i < u->n_sweep; i++)
            if (isfinite(u->sweep[i])) {
                fprintf(f, "%s%.1f %.1f", first ? "M" : "L", fx(&p, i + 1.0), fy(&p, u->sweep[i]));
                first = 0;
            }
        fputs("\"/>\n", f);
        for (i = 0; i < u->n_sweep; i++)
            if (isfinite(u->sweep[i]))
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>\n", fx(&p, i + 1.0),
                        fy(&p, u->sweep[i]), col);
    }
    // the values beside the points (left of them, where the lines leave to
    // the right; right of the last k); at each k the labels are taken from
    // the top down and pushed down until they are 14 px apart
    for (i = 0; i < nmax; i++) {
        int order[PLOT_MAX_RUNS], n = 0, j, q, last_k = i == nmax - 1;
        double last = -1e9;
        for (r = 0; r < nr; r++)
            if (i < runs[r].n_sweep && isfinite(runs[r].sweep[i])) order[n++] = r;
        for (j = 1; j < n; j++) // insertion sort by value, highest first
            for (q = j; q > 0 && runs[order[q]].sweep[i] > runs[order[q - 1]].sweep[i]; q--) {
                int t = order[q];
                order[q] = order[q - 1], order[q - 1] = t;
            }
        for (j = 0; j < n; j++) {
            const plot_run *u = &runs[order[j]];
            double ly = fy(&p, u->sweep[i]) + 4;
            if (ly < last + 14) ly = last + 14;
            last = ly;
            snprintf(b, sizeof b, "%.1f%%", u->sweep[i]);
            svg_text(f, fx(&p, i + 1.0) + (last_k ? 8 : -8), ly, 12, last_k ? "start" : "end",
                     nr == 1 ? PLOT_COLOURS[0] : run_colour(order[j]),
                     "font-weight=\"bold\" stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\"", b, 16);
        }
    }
}

// "300k", "1.2M"
static const char *count_str(double v, char *buf, size_t cap) {
    if (v >= 1e6) snprintf(buf, cap, "%.3gM", v / 1e6);
    else if (v >= 1e3) snprintf(buf, cap, "%.3gk", v / 1e3);
    else snprintf(buf, cap, "%.0f", v);
    return buf;
}

static void plot_svg(FILE *f, const plot_run *runs, int nr, const char *title, int W) {
    const double ml = 72, mr = 36, pw = W - ml - mr, ph = floor(0.27 * W), sh = floor(0.22 * W);
    const double top = 44 + 20.0 * nr + 10;
    double step_max = 0.0, H, y1, y2, y3;
    int r, i, any_sweep = 0, rows, n_lab, show_label;
    char b[128], t[128];
    frame px;
    mark_label *lab;
    for (r = 0; r < nr; r++) {
        const series *s[4] = {&runs[r].loss, &runs[r].acc, &runs[r].vloss, &runs[r].vacc};
        for (i = 0; i < 4; i++)
            if (s[i]->n && s[i]->x[s[i]->n - 1] > step_max) step_max = s[i]->x[s[i]->n - 1];
        for (i = 0; i < runs[r].n_marks; i++)
            if (runs[r].marks[i].step > step_max) step_max = runs[r].marks[i].step;
        any_sweep |= runs[r].n_sweep > 0;
    }
    // the step axis of panels 1 and 2, and the rows their stage labels need
    memset(&px, 0, sizeof px);
    px.x = ml, px.w = pw;
    px.ax = nice_axis(0.0, step_max > 10.0 ? step_max : 10.0, 8); // steps are whole numbers
    lab = layout_marks(&px, runs, nr, &n_lab, &rows);
    free(lab);
    y1 = top;
    y2 = y1 + 30 + 15.0 * rows + ph + 50;
    y3 = y2 + 30 + 15.0 * rows + ph + 50;
    H = y3 + (any_sweep ? 30 + sh + 46 : 50);
    show_label = nr > 1 || (title && strcmp(title, runs[0].label));
    if (!title) {
        if (nr == 1) title = runs[0].label;
        else snprintf(t, sizeof t, "%d training runs", nr), title = t;
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%.0f\" viewBox=\"0 0 %d %.0f\" "
               "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n", W, H, W, H);
    fputs("<title>", f);
    svg_esc(f, title, 200);
    fputs("</title>\n", f);
    fprintf(f, "<rect width=\"%d\" height=\"%.0f\" fill=\"#fff\"/>\n", W, H);
    svg_text(f, ml, 30, 20, NULL, "#111", "font-weight=\"bold\"", title, 90);
    // one line per run: colour, label, what its start and end events said
    for (r = 0; r < nr; r++) {
        const plot_run *u = &runs[r];
        double y = 44 + 20.0 * r + 10, x = ml;
        char d[400];
        size_t len = 0;
        d[0] = '\0';
#define ADD(...) (len += (size_t)snprintf(d + len, len < sizeof d ? sizeof d - len : 0, __VA_ARGS__))
        if (*u->schedule) ADD("%s schedule", u->schedule);
        if (isfinite(u->branches)) ADD("%s%.0f branch%s", len ? ", " : "", u->branches, u->branches == 1 ? "" : "es");
        if (isfinite(u->depth)) ADD(" \xC3\x97 depth %.0f", u->depth); // U+00D7 multiplication sign
        if (isfinite(u->params)) ADD("%s%s parameters", len ? ", " : "", count_str(u->params, b, sizeof b));
        if (isfinite(u->test_acc)) ADD("%stest accuracy %.2f%%", len ? ", " : "", u->test_acc);
        if (*u->data) ADD("%s%s", len ? ", " : "", u->data);
#undef ADD
        if (nr > 1) {
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"4\"/>\n", x,
                    y - 4, x + 20, y - 4, run_colour(r));
            x += 28;
        }
        if (show_label) {
            svg_text(f, x, y, 13, NULL, "#222", "font-weight=\"bold\"", u->label, 60);
            x += text_w(u->label, 13) + 12;
        }
        if (*d && x < W - mr - 40) svg_text(f, x, y, 13, NULL, "#555", NULL, d, (size_t)((W - mr - x) / (0.58 * 13)));
    }
    plot_step_panel(f, runs, nr, 0, ml, y1, pw, ph, &px.ax, rows);
    plot_step_panel(f, runs, nr, 1, ml, y2, pw, ph, &px.ax, rows);
    plot_sweep_panel(f, runs, nr, ml, y3, pw, sh);
    fputs("</svg>\n", f);
}

#endif // PARAFORMER_PLOT_H
