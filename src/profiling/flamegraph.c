// SPDX-License-Identifier: MIT
/*
 * A self-contained SVG flame graph from folded stacks, in the layout of
 * Brendan Gregg's flamegraph.pl (root at the bottom, children sorted by
 * name, width proportional to samples, a tooltip per frame). Plain SVG:
 * no script, no external fonts or styles.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "qlite/report.h"

#define FG_WIDTH 1200
#define FG_PAD 10
#define FG_FRAME 16
#define FG_TOP 56 /* title and subtitle */
#define FG_BOTTOM 20
#define FG_CHAR_PX 7.0 /* average glyph width at 12px */
#define FG_MIN_PX 0.1 /* narrower frames are not drawn */

struct fg_node {
	char *name;
	uint64_t count;
	struct fg_node *kids;
	size_t nkids, cap;
};

static struct fg_node *fg_child(struct fg_node *n, const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < n->nkids; i++)
		if (strlen(n->kids[i].name) == len && !memcmp(n->kids[i].name, name, len))
			return &n->kids[i];
	if (n->nkids == n->cap) {
		size_t cap = n->cap ? n->cap * 2 : 4;
		struct fg_node *k = realloc(n->kids, cap * sizeof(*k));

		if (!k)
			return NULL;
		n->kids = k;
		n->cap = cap;
	}
	memset(&n->kids[n->nkids], 0, sizeof(*n->kids));
	n->kids[n->nkids].name = strndup(name, len);
	if (!n->kids[n->nkids].name)
		return NULL;
	return &n->kids[n->nkids++];
}

static int fg_insert(struct fg_node *root, const char *stack, uint64_t count)
{
	struct fg_node *n = root;
	const char *p = stack;

	root->count += count;
	while (*p) {
		size_t len = strcspn(p, ";");

		n = fg_child(n, p, len);
		if (!n)
			return -ENOMEM;
		n->count += count;
		p += len;
		if (*p == ';')
			p++;
	}
	return 0;
}

static void fg_free(struct fg_node *n)
{
	size_t i;

	for (i = 0; i < n->nkids; i++)
		fg_free(&n->kids[i]);
	free(n->kids);
	free(n->name);
}

static int fg_cmp(const void *a, const void *b)
{
	return strcmp(((const struct fg_node *)a)->name, ((const struct fg_node *)b)->name);
}

static unsigned int fg_sort(struct fg_node *n)
{
	unsigned int d = 0, i;

	if (n->nkids > 1)
		qsort(n->kids, n->nkids, sizeof(*n->kids), fg_cmp);
	for (i = 0; i < n->nkids; i++)
		d = MAX(d, fg_sort(&n->kids[i]) + 1);
	return d;
}

static void xml_escape(FILE *f, const char *s, size_t max)
{
	size_t i;

	for (i = 0; s[i] && i < max; i++) {
		switch (s[i]) {
		case '&':
			fputs("&amp;", f);
			break;
		case '<':
			fputs("&lt;", f);
			break;
		case '>':
			fputs("&gt;", f);
			break;
		case '"':
			fputs("&quot;", f);
			break;
		case '\'':
			fputs("&apos;", f);
			break;
		default:
			/* Control bytes are not allowed in XML 1.0. */
			fputc((unsigned char)s[i] < 0x20 ? '?' : s[i], f);
		}
	}
}

/* flamegraph.pl's palettes: warm for kernel code, aqua for user space. */
static void fg_color(const char *name, bool user, bool root, char *buf, size_t len)
{
	uint32_t h = 2166136261u;
	const char *p;
	double v1, v2;

	if (root) {
		snprintf(buf, len, "rgb(200,200,200)");
		return;
	}
	for (p = name; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	v1 = (double)(h & 0xffff) / 65536.0;
	v2 = (double)(h >> 16) / 65536.0;
	if (user)
		snprintf(buf, len, "rgb(%d,%d,%d)", 50 + (int)(60 * v1), 165 + (int)(55 * v1),
			 165 + (int)(55 * v2));
	else
		snprintf(buf, len, "rgb(%d,%d,%d)", 205 + (int)(50 * v2), (int)(230 * v1),
			 (int)(55 * v2));
}

struct fg_ctx {
	FILE *f;
	double scale; /* pixels per sample */
	uint64_t total;
	int height;
};

static void fg_draw(struct fg_ctx *c, const struct fg_node *n, unsigned int depth, double x,
		    bool user, bool root)
{
	double w = (double)n->count * c->scale, kx = x;
	double y = c->height - FG_BOTTOM - (double)(depth + 1) * FG_FRAME;
	size_t chars, i;
	char color[48];

	if (w < FG_MIN_PX)
		return;
	user = user || !strncmp(n->name, "[user", 5);
	fg_color(n->name, user, root, color, sizeof(color));
	fprintf(c->f, "<g><title>");
	xml_escape(c->f, n->name, SIZE_MAX);
	fprintf(c->f, " (%" PRIu64 " samples, %.2f%%)</title>", n->count,
		c->total ? 100.0 * (double)n->count / (double)c->total : 0.0);
	fprintf(c->f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%d\" fill=\"%s\" rx=\"2\"/>",
		x, y, w, FG_FRAME - 1, color);
	chars = w > 3 * FG_CHAR_PX ? (size_t)(w / FG_CHAR_PX) - 1 : 0;
	if (chars >= 3) {
		fprintf(c->f, "<text x=\"%.1f\" y=\"%.1f\">", x + 3, y + FG_FRAME - 4.5);
		if (strlen(n->name) > chars) {
			xml_escape(c->f, n->name, chars - 2);
			fputs("..", c->f);
		} else {
			xml_escape(c->f, n->name, SIZE_MAX);
		}
		fputs("</text>", c->f);
	}
	fputs("</g>\n", c->f);
	for (i = 0; i < n->nkids; i++) {
		fg_draw(c, &n->kids[i], depth + 1, kx, user, false);
		kx += (double)n->kids[i].count * c->scale;
	}
}

int report_write_svg(const struct report *r, const char *title, FILE *f)
{
	struct fg_node root = { 0 };
	struct fg_ctx c = { .f = f };
	unsigned int depth;
	size_t i;
	int ret = 0;

	root.name = strdup("all");
	if (!root.name)
		return -ENOMEM;
	for (i = 0; i < r->n && !ret; i++)
		ret = fg_insert(&root, r->e[i].stack, r->e[i].count);
	if (ret) {
		fg_free(&root);
		return ret;
	}
	depth = fg_sort(&root) + 1;
	c.total = root.count;
	c.height = FG_TOP + (int)depth * FG_FRAME + FG_BOTTOM;
	c.scale = root.count ? (double)(FG_WIDTH - 2 * FG_PAD) / (double)root.count : 0;
	fprintf(f, "<?xml version=\"1.0\" standalone=\"no\"?>\n"
		   "<svg version=\"1.1\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
		   "xmlns=\"http://www.w3.org/2000/svg\">\n",
		FG_WIDTH, c.height, FG_WIDTH, c.height);
	fputs("<style>text{font-family:Verdana,sans-serif;font-size:12px;fill:#000}"
	      "rect:hover{stroke:#000;stroke-width:0.5}</style>\n",
	      f);
	fputs("<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#f8f8f4\"/>\n", f);
	fprintf(f, "<text x=\"%d\" y=\"24\" text-anchor=\"middle\" style=\"font-size:17px\">",
		FG_WIDTH / 2);
	xml_escape(f, title ? title : "qlite guest profile", SIZE_MAX);
	fputs("</text>\n", f);
	fprintf(f,
		"<text x=\"%d\" y=\"44\" text-anchor=\"middle\" style=\"fill:#555\">%" PRIu64
		" samples shown (kernel %" PRIu64 ", user %" PRIu64 "); idle %" PRIu64
		" of %" PRIu64 " (%.1f%%) not shown</text>\n",
		FG_WIDTH / 2, root.count, r->kernel, r->user, r->idle, r->total,
		r->total ? 100.0 * (double)r->idle / (double)r->total : 0.0);
	if (root.count)
		fg_draw(&c, &root, 0, FG_PAD, false, true);
	else
		fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">no non-idle samples</text>\n",
			FG_WIDTH / 2, c.height - FG_BOTTOM - 4);
	fputs("</svg>\n", f);
	fg_free(&root);
	return ferror(f) ? -EIO : 0;
}
