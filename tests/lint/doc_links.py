#!/usr/bin/env python3
"""Every relative link in the project's Markdown (README.md, docs/) leads
somewhere: the file exists, and a #fragment names one of its headings (as
GitHub makes them: lower case, punctuation dropped, spaces as '-', '-N'
after the Nth repeat). Prints one line per broken link (file:line, the
link, why) and exits 1 if there is any.

    doc_links.py SOURCE_DIR
"""
import glob
import os
import re
import sys

LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path, cache={}):
    """The heading fragments of a Markdown file (code blocks skipped)."""
    if path not in cache:
        found, seen, fenced = set(), {}, False
        for line in open(path, encoding="utf-8"):
            if line.startswith("```"):
                fenced = not fenced
                continue
            m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
            if not m:
                continue
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
        cache[path] = found
    return cache[path]


def check(root, path):
    """The broken links of one file, as printable lines."""
    bad, fenced = [], False
    for number, line in enumerate(open(path, encoding="utf-8"), 1):
        if line.startswith("```"):
            fenced = not fenced
        if fenced:
            continue
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            file, _, fragment = target.partition("#")
            where = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
            name = f"{os.path.relpath(path, root)}:{number}: ({target})"
            if not os.path.exists(where):
                bad.append(f"{name}: no such file {os.path.relpath(where, root)}")
            elif fragment and where.endswith(".md") and fragment not in anchors(where):
                bad.append(f"{name}: no heading '#{fragment}' in {os.path.relpath(where, root)}")
    return bad


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    files = [os.path.join(root, "README.md")] + sorted(
        glob.glob(os.path.join(root, "docs", "**", "*.md"), recursive=True))
    bad = [line for f in files if os.path.exists(f) for line in check(root, f)]
    for line in bad:
        print(line)
    print(f"doc_links: {len(files)} files, {len(bad)} broken link(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
